"""``xaiready evaluate MODEL --inputs DIR|FILE --method A[,B] --metrics a,b``: metrics per method."""

from __future__ import annotations

import json
import sys

from ._common import add_model_arguments, add_target_arguments

DEFAULT_METRICS = "deletion,insertion,sparseness"
_INPUT_SUFFIXES = (".npy", ".png", ".jpg", ".jpeg")


def add_arguments(p):
    add_model_arguments(p, short_graph_names=False)  # --inputs is DESIGN 3.1's DIR|FILE here
    p.add_argument("--inputs", dest="input_files", required=True, metavar="DIR|FILE",
                   help="a .npy batch, an image, or a folder of them (sorted by name)")
    p.add_argument("--method", required=True, metavar="NAME[,NAME]",
                   help="explanation methods to score; 'random' and 'center' are reference baselines")
    from ..metrics import METRICS  # NumPy only: --help stays fast

    p.add_argument("--metrics", default=DEFAULT_METRICS, metavar="a,b,c",
                   help=f"metrics (default {DEFAULT_METRICS}), of: {', '.join(METRICS.names())}")
    p.add_argument("--masks", metavar="DIR|FILE",
                   help="ground-truth masks for localization: a (N,H,W) .npy, or a folder with one file per input, same name")
    p.add_argument("--layer", metavar="NAME", help="layer for CAM methods")
    add_target_arguments(p)
    p.add_argument("--layout", choices=["NCHW", "NHWC"], help="input layout (default: the framework's)")
    p.add_argument("--resize", metavar="H,W", help="resize image inputs to H,W")
    p.add_argument("--mean", metavar="R,G,B", help="per-channel mean subtracted from images in [0, 1]")
    p.add_argument("--std", metavar="R,G,B", help="per-channel std dividing images after the mean")
    p.add_argument("--chunk-size", type=int, default=64, metavar="N", help="rows per model call (memory bound)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random perturbation")
    p.add_argument("--json", action="store_true", help="print rows {method, metric, mean, std, n, higher_is_better}")
    p.add_argument("--plot", metavar="FILE.png", help="plot the deletion/insertion curves")


def run(args) -> int:
    from ..api import explainer_for
    from ..metrics.base import Settings
    from ..metrics.evaluate import evaluate_methods
    from ._common import load_model, make_target

    handle = load_model(args)
    if args.layout:
        handle.layout = args.layout
    x, names = read_inputs(args, handle)
    mask = read_masks(args.masks, names, len(x)) if args.masks else None
    settings = Settings(chunk_size=args.chunk_size, seed=args.seed, progress=None)
    explainers = {m: explainer_for(handle, m, layer=args.layer) for m in split(args.method)}
    results = evaluate_methods(handle, x, explainers, split(args.metrics), make_target(args),
                               mask=mask, settings=settings)
    print_results(results, as_json=args.json)
    if args.plot:
        from ..metrics.table import plot_curves

        print(f"curves: {plot_curves(results, args.plot)}", file=sys.stderr)
    return 0


def split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def print_results(results, *, as_json: bool) -> None:
    from ..metrics.evaluate import rows
    from ..metrics.table import leaderboard

    table = rows(results)
    print(json.dumps(table, indent=2) if as_json else leaderboard(table))


def read_inputs(args, handle):
    """The input batch and each input's name (to match masks)."""
    from pathlib import Path

    import numpy as np

    from ..errors import UsageError
    from ..inputs import ImageOptions, read_input
    from ._common import _floats

    path = Path(args.input_files)
    files = sorted(f for f in path.iterdir() if f.suffix.lower() in _INPUT_SUFFIXES) if path.is_dir() else [path]
    if not files:
        raise UsageError(f"no .npy, .png or .jpg files in {path}")
    resize = _floats(args.resize, "--resize")
    opts = ImageOptions(resize=tuple(int(v) for v in resize) if resize else None,
                        mean=_floats(args.mean, "--mean"), std=_floats(args.std, "--std"))
    arrays = [handle.as_input(read_input(f, layout=handle.layout, image=opts)) for f in files]
    names = [f.stem for f, a in zip(files, arrays, strict=True) for _ in range(len(a))]
    try:
        return np.concatenate(arrays), names
    except ValueError:
        raise UsageError("the inputs have different shapes", hint="use --resize H,W for images") from None


def read_masks(spec: str, names: list[str], n: int):
    from pathlib import Path

    import numpy as np

    from ..errors import UsageError

    path = Path(spec)
    if path.is_dir():
        found = []
        for name in names:
            match = sorted(f for f in path.iterdir() if f.stem == name and f.suffix.lower() in _INPUT_SUFFIXES)
            if not match:
                raise UsageError(f"no mask for input '{name}' in {path}", hint="name each mask like its input")
            found.append(_read_mask(match[0]))
        masks = np.stack(found)
    else:
        masks = _read_mask(path)
    masks = masks[None] if masks.ndim == 2 else masks
    if len(masks) != n:
        raise UsageError(f"{len(masks)} masks for {n} inputs", hint="give one (H, W) mask per input")
    return masks.astype(bool)


def _read_mask(f):
    import numpy as np

    if f.suffix.lower() == ".npy":
        return np.load(f, allow_pickle=False) > 0
    from PIL import Image

    with Image.open(f) as img:
        return np.asarray(img.convert("L")) > 0
