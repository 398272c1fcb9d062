"""Heatmap overlays as PNG: one panel per (sample, method), colormap, colorbar and a caption.

matplotlib is imported lazily with the Agg backend (no display needed) and never changes the global
backend of a caller who already imported pyplot elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .._image_ops import normalize

MAX_SAMPLES = 4  # rows in one grid; more samples belong in separate files


def display_image(x: np.ndarray, layout: str) -> np.ndarray:
    """One sample as an (H, W) grey image in [0, 1]: min-max scaled (the input may be normalized), and
    grey so the heatmap's colours read unambiguously on top of it (as Captum's blended maps do)."""
    img = np.moveaxis(x, 0, -1) if layout == "NCHW" else x
    return normalize(img[..., :3].mean(-1)[None])[0]


def heat_map(values: np.ndarray, family: str, layout: str) -> tuple[np.ndarray, bool]:
    """One sample's attribution as an (H, W) map, and whether it is signed (diverging colours)."""
    if values.ndim == 3:  # an input-shaped attribution: sum its channels
        values = values.sum(0) if layout == "NCHW" else values.sum(-1)
    signed = bool(values.min() < 0 < values.max())
    return values.astype(np.float64), signed


def describe_target(target: dict, sample: int | None = None) -> str:
    """A short phrase for a target's ``describe()`` dict: "class 3 (predicted)", "regression output 0".

    With ``sample``, a per-sample class list is shown as that sample's class.
    """
    kind = target.get("type", "?")
    if kind == "class":
        score = "" if target.get("score", "logit") == "logit" else f" {target['score']}"
        chosen = " (predicted)" if target.get("chosen") == "predicted" else ""
        k = target.get("k")
        if isinstance(k, list) and sample is not None and sample < len(k):
            k = k[sample]
        return f"class {k}{score}{chosen}"
    if kind == "segmentation-region":
        return f"segmentation class {target.get('k')} over {target.get('region', 'a region')}"
    if kind == "regression":
        return f"regression output {target.get('index')}"
    if kind == "detection":
        def one(v):
            return v[sample] if isinstance(v, list) and sample is not None and sample < len(v) else v
        label, index = one(target.get("label")), one(target.get("index"))
        return f"detection box {index} (label {label}, {target.get('chosen')}, {target.get('score')})"
    return f"{kind} {target.get('name', '')}".strip()


def caption(attr, model: str, sample: int) -> str:
    """Model and method on the first line; target, layer and the explained score on the second."""
    label = f"{attr.method} (black-box)" if attr.black_box else attr.method
    second = [describe_target(attr.target or {}, sample)]
    if attr.layer:
        second.append(f"layer {attr.layer}")
    if attr.scores is not None and len(attr.scores) > sample:
        second.append(f"score {float(attr.scores[sample]):.4g}")
    flags = attr.info.get("degenerate") or []
    if len(flags) > sample and flags[sample]:
        second.append(f"{flags[sample]} map")
    return f"{model} | {label}\n" + " | ".join(second)


def explained_box(target: dict, sample: int, size: tuple[int, int]) -> list[float] | None:
    """The (x1, y1, x2, y2) box a detection target explains for ``sample``, in pixels of a ``size`` (H, W)
    image (a DETR's relative box scaled to it); None for other targets."""
    box = target.get("box") if target.get("type") == "detection" else None
    if box is None:
        return None
    box = np.asarray(box, dtype=np.float64).reshape(-1, 4)
    box = box[sample if len(box) > 1 else 0]
    if target.get("output") == "detr":
        box = box * np.array([size[1], size[0], size[1], size[0]])
    return box.tolist()


def _draw_box(ax, target: dict, sample: int, size: tuple[int, int]) -> None:
    from matplotlib.patches import Rectangle

    box = explained_box(target, sample, size)
    if box is None:
        return
    x1, y1, x2, y2 = box
    ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="lime", linewidth=1.6))
    label = target.get("label")
    label = label[sample] if isinstance(label, list) else label
    ax.text(x1, y1, f"label {label}", color="black", fontsize=7, va="bottom",
            bbox={"facecolor": "lime", "edgecolor": "none", "pad": 1})


def render(attrs: Sequence, x: np.ndarray, out: str | Path, *, model: str = "model", cmap: str | None = None,
           alpha: float = 0.5) -> Path:
    """Write the overlay of every attribution in ``attrs`` (all of the same input ``x``) to ``out``."""
    from .._lazy import import_optional

    import_optional("matplotlib")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.figure import Figure

    attrs = list(attrs)
    n_rows, n_cols = min(len(x), MAX_SAMPLES), len(attrs)
    fig = Figure(figsize=(4.4 * n_cols, 4.6 * n_rows), dpi=100)
    FigureCanvasAgg(fig)  # Agg without touching pyplot's global backend
    for row in range(n_rows):
        for col, attr in enumerate(attrs):
            ax = fig.add_subplot(n_rows, n_cols, row * n_cols + col + 1)
            layout = attr.layout
            ax.imshow(display_image(x[row], layout), cmap="gray")
            heat, signed = heat_map(attr.values[row], attr.family, layout)
            if signed:
                bound = float(np.abs(heat).max())
                im = ax.imshow(heat, cmap=cmap or "coolwarm", alpha=alpha,
                               norm=TwoSlopeNorm(vcenter=0.0, vmin=-bound, vmax=bound))
            else:
                # anchored at zero, so an all-zero map shows as "nothing" rather than a mid colour
                top = float(heat.max()) if heat.max() > 0 else 1.0
                im = ax.imshow(heat, cmap=cmap or "jet", alpha=alpha, vmin=min(0.0, float(heat.min())), vmax=top)
            bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
            bar.formatter.set_powerlimits((-2, 3))
            bar.ax.tick_params(labelsize=7)
            _draw_box(ax, attr.target, row, heat.shape)
            ax.set_axis_off()
            ax.text(0.5, -0.03, caption(attr, model, row), transform=ax.transAxes, ha="center", va="top",
                    fontsize=8, wrap=True)
    if len(x) > MAX_SAMPLES:
        fig.suptitle(f"first {MAX_SAMPLES} of {len(x)} samples", fontsize=9)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, format="png")
    return out
