"""Options shared by the subcommands that load a model and read an input."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UsageError


def add_model_arguments(p: argparse.ArgumentParser, *, short_graph_names: bool = True) -> None:
    """``short_graph_names``: also accept --inputs/--outputs for the TF graph tensors (not in ``evaluate``,
    whose --inputs names the input files)."""
    p.add_argument("model", metavar="MODEL", help="model file or folder (format detected from content)")
    p.add_argument("--arch", metavar="MODULE:CLASS", help="architecture for a state dict: MODULE:CLASS or FILE.py:CLASS")
    p.add_argument("--arch-kwargs", metavar="JSON", help="constructor arguments for --arch, as a JSON object")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE|FILE.py",
                   help="import your code (custom classes) before loading; repeatable")
    p.add_argument("--trust", action="store_true",
                   help="allow formats that run code from the file (pickled modules, TorchScript)")
    p.add_argument("--output", metavar="NAME|INDEX", help="which output to explain, for dict/tuple outputs; for ONNX, any "
                   "tensor of the graph by name (e.g. the logits before a final Softmax)")
    p.add_argument("--device", metavar="cpu|cuda|cuda:N|auto",
                   help="where the model runs (default: the framework's default, the CPU for PyTorch)")
    p.add_argument("--signature", metavar="NAME", help="SavedModel signature to call (default: serving_default)")
    short = short_graph_names
    p.add_argument("--graph-inputs", *(["--inputs"] if short else []), dest="inputs", metavar="NAME",
                   help="input tensor of a frozen TF graph, when not unambiguous")
    p.add_argument("--graph-outputs", *(["--outputs"] if short else []), dest="outputs", metavar="NAME",
                   help="output tensor of a frozen TF graph (or SavedModel output key)")
    p.add_argument("--no-convert", dest="convert", action="store_false",
                   help="keep ONNX models on ONNX Runtime (inference-only) instead of converting them to a "
                        "verified differentiable PyTorch model")
    add_limit_arguments(p)


def add_limit_arguments(p: argparse.ArgumentParser) -> None:
    """Resource limits (see xaiready.limits for defaults and why); --trust never changes them."""
    g = p.add_argument_group("resource limits (exit 5 when exceeded)")
    g.add_argument("--max-unpacked-mb", type=float, metavar="MB", help="declared unpacked size of an archive (8192)")
    g.add_argument("--max-ratio", type=float, metavar="X", help="compression ratio of an archive member (100)")
    g.add_argument("--max-image-pixels", type=int, metavar="N", help="pixels of an input image (50000000)")
    g.add_argument("--max-input-mb", type=float, metavar="MB", help="one sample of a declared input (1024)")


def apply_limits(args) -> None:
    from .. import limits

    mb = limits.MiB
    limits.configure(
        max_unpacked_bytes=None if getattr(args, "max_unpacked_mb", None) is None else int(args.max_unpacked_mb * mb),
        max_ratio=getattr(args, "max_ratio", None),
        max_image_pixels=getattr(args, "max_image_pixels", None),
        max_input_bytes=None if getattr(args, "max_input_mb", None) is None else int(args.max_input_mb * mb))


def add_input_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", metavar="FILE|NAME=FILE", action="append",
                   help="input: .npy (taken as is) or .png/.jpg image; a multi-input model takes each of its "
                        "inputs by name, --input image=a.png --input meta=m.npy")
    p.add_argument("--explain-input", metavar="NAME",
                   help="multi-input models: the input to explain, the others held fixed (default: the only 4-D one)")
    p.add_argument("--input-shape", metavar="N,C,H,W", help="use a seeded random input of this shape")
    p.add_argument("--layout", choices=["NCHW", "NHWC"], help="input layout (default: the framework's; ONNX: detected from the graph, e.g. NHWC "
                   "for a graph that begins with a Transpose to NCHW; the input-layout check says which)")
    p.add_argument("--resize", metavar="H,W", help="resize image inputs to H,W")
    p.add_argument("--mean", metavar="R,G,B", help="per-channel mean subtracted from images in [0, 1]")
    p.add_argument("--std", metavar="R,G,B", help="per-channel std dividing images after the mean")


def add_target_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", choices=["classification", "segmentation", "regression", "sequence", "detection"],
                   help="what the score is (default: guessed from a (N, K) or 4-D output shape, detection for "
                        "a model returning detections; a 3-D (B, T, K) output needs --task "
                        "sequence|detection|regression|segmentation)")
    p.add_argument("--target", type=int, metavar="K",
                   help="class K (classification/segmentation/detection) or output index (regression)")
    p.add_argument("--target-fn", metavar="FILE.py:FN",
                   help="explain fn(output), one score per sample in the framework's own ops; fn gets the "
                        "model's raw output (tensor, dict, list of dicts...). Imports and runs your code")
    det = p.add_argument_group("detection (--task detection): which box, and how to read a raw head")
    det.add_argument("--box-index", type=int, metavar="I",
                     help="prediction I (torchvision: the I-th kept box, best first; YOLO: anchor I; DETR: query I)")
    det.add_argument("--box", metavar="X1,Y1,X2,Y2",
                     help="the prediction best matching this box (IoU), in input pixels (DETR: 0..1)")
    det.add_argument("--box-format", choices=["xywh", "xyxy"],
                     help="how the model writes boxes (default: xyxy for dicts, xywh for YOLO heads)")
    det.add_argument("--no-objectness", action="store_true",
                     help="a (B, N, 4+K) head without objectness (default: (B, N, 5+K) has one)")
    p.add_argument("--target-text", metavar="I,J,...",
                   help="sequence task: explain log p(this label sequence) (minus the CTC loss), given as "
                        "class indices (map your alphabet to indices yourself); default: the best path")
    p.add_argument("--blank", type=int, metavar="K", help="sequence task: the CTC blank class (default 0)")


def add_method_arguments(g, *, npy_baseline: bool = True) -> None:
    """The options of methods that take any (IG, SmoothGrad, RISE/D-RISE, KernelSHAP), on group ``g``."""
    g.add_argument("--n-steps", type=int, metavar="N", help="integrated gradients: path points (default 50)")
    g.add_argument("--ig-method", choices=["gausslegendre", "riemann_left", "riemann_right", "riemann_middle",
                                           "riemann_trapezoid"], help="integrated gradients: quadrature rule")
    g.add_argument("--baseline", metavar="zeros|blur|uniform" + ("|FILE.npy" if npy_baseline else ""),
                   help="integrated gradients: baseline")
    g.add_argument("--base", metavar="METHOD", help="smoothgrad/vargrad: the gradient method to smooth (saliency)")
    g.add_argument("--samples", type=int, metavar="N", help="smoothgrad/vargrad: noisy samples (default 25)")
    g.add_argument("--noise", type=float, metavar="FRACTION",
                   help="smoothgrad/vargrad: noise std as a fraction of the input range (default 0.15)")
    g.add_argument("--n-masks", type=int, metavar="N", help="rise/drise: random masks (default 1000)")
    g.add_argument("--grid", type=int, metavar="N", help="rise/drise/kernelshap: mask grid cells per side "
                   "(defaults: rise 7, drise 16, kernelshap 8)")


def method_options(args) -> dict:
    """What ``add_method_arguments`` parsed, by method option name (None where not given)."""
    return {"n_steps": args.n_steps, "integration": args.ig_method, "baseline": args.baseline, "base": args.base,
            "n_samples": args.samples, "noise_level": args.noise, "n_masks": args.n_masks, "grid": args.grid}


def _floats(text: str | None, what: str):
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise UsageError(f"{what} '{text}' is not a comma-separated list of numbers") from None


def load_model(args):
    from ..api import load

    apply_limits(args)
    output = args.output
    if output is not None and output.lstrip("-").isdigit():
        output = int(output)
    return load(args.model, arch=args.arch, arch_kwargs=args.arch_kwargs, trust=args.trust,
                imports=args.imports, output=output, convert=getattr(args, "convert", True),
                device=getattr(args, "device", None),
                **{k: getattr(args, k) for k in ("signature", "inputs", "outputs") if getattr(args, k, None)})


def read_input(args, handle):
    """The input array of ``args``; with ``--input NAME=FILE`` inputs, the explained one, the others
    then held fixed by ``handle`` (see ``held_inputs``)."""
    from ..api import prepare_input
    from ..inputs import parse_shape
    from ..inputs import read_input as _read

    if args.layout:
        handle.layout = args.layout
    if args.input and args.input_shape:
        raise UsageError("give --input or --input-shape, not both")
    entries = [args.input] if isinstance(args.input, str) else list(args.input or [])
    named = named_inputs(entries)
    if named is not None:  # a multi-input model: its handle now holds the other inputs fixed
        from ..held_inputs import hold_in_place

        x = hold_in_place(handle, {k: _read_one(f, handle, args, _read) for k, f in named.items()},
                          getattr(args, "explain_input", None), check=not getattr(args, "method", None))
        handle.layout = args.layout or handle.layout  # --layout still wins over the explained input's guess
        return x
    if getattr(args, "explain_input", None):
        raise UsageError("--explain-input needs the inputs by name", hint="--input NAME=FILE for each input")
    if len(entries) > 1:
        raise UsageError(f"{len(entries)} --input files without names",
                         hint="a multi-input model takes --input NAME=FILE for each input")
    from ..held_inputs import require_single

    require_single(handle)
    if entries:
        return handle.as_input(_read_one(entries[0], handle, args, _read))
    shape = parse_shape(args.input_shape) if args.input_shape else None
    return prepare_input(handle, None, shape)


def named_inputs(entries: list[str]) -> dict[str, str] | None:
    """``--input NAME=FILE`` entries as {name: file}; None for a plain ``--input FILE`` (a path that
    exists is a file even if its name holds '=')."""
    if not any("=" in e and not Path(e).exists() for e in entries):
        return None
    named: dict[str, str] = {}
    for entry in entries:
        name, sep, file = entry.partition("=")
        if not sep or not name or not file or Path(entry).exists():
            raise UsageError(f"--input '{entry}' has no name", hint="give every input as --input NAME=FILE")
        if name in named:
            raise UsageError(f"input '{name}' is given twice")
        named[name] = file
    return named


def _read_one(path: str, handle, args, read):
    """One input file as an array (its dtype kept): images preprocessed as ``--resize``/``--mean``/``--std``
    say."""
    from ..inputs import ImageOptions

    resize = _floats(args.resize, "--resize")
    opts = ImageOptions(resize=tuple(int(v) for v in resize) if resize else None,
                        mean=_floats(args.mean, "--mean"), std=_floats(args.std, "--std"))
    is_image = Path(path).suffix.lower() in (".png", ".jpg", ".jpeg")
    opts = carried_options(handle, opts) if is_image else opts
    x = read(path, layout=handle.layout, image=opts)
    if not is_image:
        warn_unnormalised(handle, x)
    return x


def carried_options(handle, opts):
    """Image options the user left out, filled from the preprocessing the model carries (timm's
    pretrained_cfg, a preprocessor_config.json); what was used goes into the report's notes."""
    from dataclasses import replace

    carried = getattr(handle, "preprocessing", None)
    if not carried:
        return opts
    used = {}
    if opts.mean is None and carried.get("mean") and opts.std is None and carried.get("std"):
        used.update(mean=tuple(carried["mean"]), std=tuple(carried["std"]))
    size = carried.get("input_size")
    if opts.resize is None and size:
        used["resize"] = tuple(int(v) for v in size[-2:])
    if used:
        handle.notes.append("image preprocessed with the model's own " + ", ".join(f"{k} {list(v)}" for k, v in
                            used.items()) + f" (from {carried.get('source', 'the model')}; "
                            "--mean/--std/--resize override)")
    return replace(opts, **used)


def warn_unnormalised(handle, x) -> None:
    """A model that carries a mean/std normalisation, fed an array that looks like raw pixels."""
    carried = getattr(handle, "preprocessing", None)
    if not carried or not carried.get("std") or x.size == 0:
        return
    lo, hi = float(x.min()), float(x.max())
    if lo >= 0 and hi > 0.5:  # normalised inputs are centred near 0; raw pixels are all >= 0
        handle.notes.append(f"the input's values lie in [{lo:.3g}, {hi:.3g}], but the model expects images "
                            f"normalised with mean {list(carried['mean'])} and std {list(carried['std'])}; "
                            "explanations of unnormalised inputs can mislead")


def make_target(args, output_shape=None):
    """The target the options name, or None when they name none. ``output_shape`` (a shape, or a
    callable giving it) settles the task of a bare --target; without it a bare --target is a class."""
    from ..targets import for_task, infer_task

    text, blank = getattr(args, "target_text", None), getattr(args, "blank", None)
    if getattr(args, "target_fn", None):
        return _custom_target(args)
    box_given = any(getattr(args, k, None) not in (None, False) for k in ("box_index", "box", "box_format",
                                                                          "no_objectness"))
    if args.task == "detection" or box_given:
        return _detection_target(args)
    if args.task is None and args.target is None and text is None and blank is None:
        return None
    labels = None
    if text is not None:
        try:
            labels = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise UsageError(f"--target-text '{text}' is not a comma-separated list of class indices",
                             hint="e.g. --target-text 3,1,4 (map characters to class indices yourself)") from None
    task = args.task
    if task is None:
        if text is not None or blank is not None:
            task = "sequence"
        elif output_shape is not None:
            task = infer_task(output_shape() if callable(output_shape) else output_shape)
        else:
            task = "classification"
    if task != "sequence" and (text is not None or blank is not None):
        raise UsageError(f"--target-text and --blank are for --task sequence, not {task}")
    return for_task(task, args.target, labels=labels, blank=blank)


def _custom_target(args):
    from ..targets import Custom
    from ..usercode import load_function

    if args.task is not None or args.target is not None:
        raise UsageError("--target-fn is the whole target: drop --task/--target")
    return Custom(load_function(args.target_fn), name=args.target_fn, raw=True)


def _detection_target(args):
    from ..targets import Detection

    if args.task not in (None, "detection"):
        raise UsageError(f"--box-index, --box, --box-format and --no-objectness are for --task detection, not {args.task}")
    box = _floats(args.box, "--box")
    if box is not None and len(box) != 4:
        raise UsageError(f"--box '{args.box}' needs four numbers x1,y1,x2,y2")
    return Detection(index=args.box_index, label=args.target, box=box, box_format=args.box_format,
                     objectness=False if args.no_objectness else None)
