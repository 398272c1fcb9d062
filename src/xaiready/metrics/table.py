"""Plain-text tables and the deletion/insertion plot for ``evaluate`` and ``benchmark``."""

from __future__ import annotations

import math


def leaderboard(rows: list[dict]) -> str:
    """Methods as rows, metrics as columns (mean +- std), an arrow saying which way is better."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    cell = {(r["method"], r["metric"]): r for r in rows}
    better = {r["metric"]: r["higher_is_better"] for r in rows}
    heads = ["method"] + [f"{m} {'^' if better[m] else 'v'}" for m in metrics]
    body = []
    for method in methods:
        line = [method]
        for m in metrics:
            r = cell.get((method, m))
            if r is None or r["mean"] is None:
                line.append("-")
            else:
                std = "" if r["std"] is None or math.isnan(r["std"]) else f" +-{r['std']:.3f}"
                line.append(f"{r['mean']:.3f}{std}")
        body.append(line)
    widths = [max(len(str(row[i])) for row in [heads] + body) for i in range(len(heads))]
    fmt = lambda row: "  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True))  # noqa: E731
    return "\n".join([fmt(heads), "  ".join("-" * w for w in widths)] + [fmt(r) for r in body]
                     + ["(^ higher is better, v lower is better; mean +- std over inputs)"])


def plot_curves(results: dict, path: str) -> str:
    """Mean deletion/insertion (and pixel-flipping) curves per method, one panel per metric."""
    from .._lazy import import_optional

    matplotlib = import_optional("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [m for m in ("deletion", "insertion", "pixel-flipping")
             if any(m in per and per[m].curves is not None for per in results.values())]
    if not names:
        from ..errors import UsageError

        raise UsageError("--plot needs a curve metric", hint="add deletion, insertion or pixel-flipping to --metrics")
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for method, per in results.items():
            r = per.get(name)
            if r is None or r.curves is None:
                continue
            curve = r.curves.mean(0)
            frac = [i / (len(curve) - 1) for i in range(len(curve))] if len(curve) > 1 else [0.0]
            ax.plot(frac, curve, label=f"{method} ({r.mean:.3f})")
        ax.set_title(name)
        ax.set_xlabel("fraction of pixels changed" if name != "pixel-flipping" else "fraction of steps")
        ax.set_ylabel("class probability")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
