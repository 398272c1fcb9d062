"""Black-box methods: attributions from forward passes alone, for any backend.

They call nothing but ``handle.forward`` (through the target's scores), so they work on ONNX Runtime,
TorchScript, eager torch or TensorFlow alike. Every result has family ``black_box``: it says how the
*output* reacts to hiding parts of the input, never what a gradient would say.

* ``occlusion``: slide a window (filled with ``fill``) over the input; each element gets the mean score
  drop of the windows covering it (Zeiler & Fergus 2014; the same arithmetic as Captum's Occlusion).
* ``rise``: random smooth masks keep each grid cell with probability ``p``; the saliency is the
  score-weighted mean mask, divided by ``p`` (Petsiuk et al. 2018, https://arxiv.org/abs/1806.07421).
* ``drise``: RISE for one detected box (Petsiuk et al. 2021, https://arxiv.org/abs/2006.03204): each
  mask is weighted by its best similarity to the explained box over *all* predictions of the masked
  input (IoU x the box label's score, x objectness), so it needs a detection target and works on any
  detector, inference-only ones included.
* ``kernelshap``: Shapley values of grid cells (a cell is "absent" when filled with ``fill``), solved
  as Lundberg & Lee's (2017) weighted least squares with the efficiency constraint built in;
  exact when every coalition fits in ``n_samples``.

All perturbed copies are built and scored ``batch_size`` at a time, so memory stays bounded; long
runs report progress on stderr.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np

from .._batching import Progress, iter_chunks, score_rows, scores_of
from .._image_ops import linear_matrix, spatial_axes
from ..errors import UsageError
from ..targets import Detection
from ._chunking import auto_batch_size
from ._common import Prepared, attribution, prepare
from .base import Method, register

BLACK_BOX_NOTE = "black-box: computed from forward passes only (no gradients)"
PROGRESS_AFTER_ROWS = 256  # runs with more forward rows than this report progress (when stderr is a tty)
_COMMON = {"batch_size": None, "progress": None}  # rows per forward pass (None: automatic); progress on stderr


class BlackBoxMethod(Method):
    family = "black_box"
    requires = frozenset({"forward"})
    defaults: ClassVar[dict[str, Any]] = dict(_COMMON)

    def __call__(self, handle, x, target=None, *, layer: str | None = None, contrast: bool = False,
                 **options) -> Any:
        """``contrast`` is accepted for a uniform call and ignored: a black-box method's class check
        re-explains (at ``--sanity full``)."""
        if layer is not None:
            raise UsageError(f"{self.name} is a black-box method and uses no layer",
                             hint="drop --layer, or choose a CAM method")
        opts = self.options(options)
        prep = prepare(handle, x, target)
        opts["batch_size"] = auto_batch_size(prep.x, opts["batch_size"])
        with handle.session():
            values, info = self.attribute(handle, prep, opts)
        return attribution(self, handle, prep, values, {k: v for k, v in opts.items() if k != "progress"},
                           info={"black_box": True, **info}, warnings=(BLACK_BOX_NOTE,))

    def attribute(self, handle, prep: Prepared, opts: dict) -> tuple[np.ndarray, dict]:
        raise NotImplementedError


# ---- shared machinery --------------------------------------------------------------------------------
def _progress(name: str, total: int, show: bool | None) -> Progress:
    """The run's progress on stderr, refreshed at most twice a second; by default only for runs of more
    than ``PROGRESS_AFTER_ROWS`` forward rows on a terminal."""
    return Progress(name, total, show=show, long_run=PROGRESS_AFTER_ROWS + 1, unit="forward passes", interval=0.5)


def sample_axes(x: np.ndarray, layout: str, method: str) -> tuple[int, int]:
    """Axes of height and width of one sample (without the batch axis); (N, H, W) batches have no channels."""
    if x.ndim == 4:
        return spatial_axes(x, layout, batched=False)
    if x.ndim == 3:
        return (0, 1)
    raise UsageError(f"{method} needs image inputs (N,C,H,W), (N,H,W,C) or (N,H,W); got shape {x.shape}",
                     hint="use occlusion, which works on any input shape")


def broadcast_map(maps: np.ndarray, x: np.ndarray, layout: str) -> np.ndarray:
    """(N, H, W) maps repeated over the channel axis, so values are shaped like the input."""
    if x.ndim == 3:
        return maps
    expanded = maps[:, None] if layout == "NCHW" else maps[..., None]
    return np.broadcast_to(expanded, x.shape).copy()


def _pair(value, what: str) -> tuple[int, int]:
    vals = (value, value) if np.isscalar(value) else tuple(value)
    if len(vals) != 2 or any(int(v) < 1 for v in vals):
        raise UsageError(f"{what} must be a positive integer or a pair of them, not {value!r}")
    return int(vals[0]), int(vals[1])


# ---- occlusion -----------------------------------------------------------------------------------------
@register
class Occlusion(BlackBoxMethod):
    """Mean score drop when a sliding window of the input is replaced by ``fill``.

    ``window`` and ``stride`` are an int (a square over the spatial axes, all channels), a pair (H, W),
    or a tuple over every non-batch axis as in Captum. Default window: 1/14 of the shorter side.
    """

    name = "occlusion"
    defaults = {**_COMMON, "window": None, "stride": None, "fill": 0.0}

    def attribute(self, handle, prep, opts):
        x = prep.x
        window, stride = self._shapes(x, handle.layout, opts["window"], opts["stride"])
        sample_shape = x.shape[1:]
        counts = [math.ceil((d - w) / s) + 1 for d, w, s in zip(sample_shape, window, stride, strict=True)]
        starts = np.stack(np.meshgrid(*[np.arange(c) * s for c, s in zip(counts, stride, strict=True)],
                                      indexing="ij"), -1).reshape(-1, len(window))
        slices = [tuple(slice(int(a), int(a) + w) for a, w in zip(st, window, strict=True)) for st in starts]
        fill = float(opts["fill"])
        progress = _progress(self.name, len(slices) * x.shape[0], opts["progress"])
        values = np.zeros(x.shape, dtype=np.float64)
        coverage = np.zeros(sample_shape, dtype=np.float64)
        for sl in slices:
            coverage[sl] += 1.0
        for i in range(x.shape[0]):
            def build(lo, hi, xi=x[i]):
                batch = np.repeat(xi[None], hi - lo, axis=0)
                for r, row in enumerate(range(lo, hi)):
                    batch[(r,) + slices[row]] = fill
                return batch
            drops = prep.scores[i] - score_rows(handle, prep.target, len(slices), build, np.full(len(slices), i),
                                                opts["batch_size"], progress=progress)
            for sl, drop in zip(slices, drops, strict=True):
                values[(i,) + sl] += drop
        values /= coverage[None]
        return values, {"windows": len(slices), "window": list(window), "stride": list(stride),
                        "forward_passes": len(slices) * x.shape[0]}

    @staticmethod
    def _shapes(x, layout, window, stride):
        dims = x.shape[1:]
        if window is None:
            h, w = sample_axes(x, layout, "occlusion's default window")
            side = max(1, min(dims[h], dims[w]) // 14)
            window = (side, side)
        window = Occlusion._full(window, dims, x, layout, "window")
        stride = window if stride is None else Occlusion._full(stride, dims, x, layout, "stride")
        if any(w > d for w, d in zip(window, dims, strict=True)):
            raise UsageError(f"occlusion window {window} is larger than the input {dims}")
        if any(s > w and w < d for s, w, d in zip(stride, window, dims, strict=True)):
            raise UsageError(f"occlusion stride {stride} is larger than the window {window}, so some input "
                             "elements would never be occluded", hint="use a stride <= the window")
        return window, stride

    @staticmethod
    def _full(value, dims, x, layout, what):
        if np.isscalar(value) or len(value) == 2 and len(dims) != 2:
            h, w = sample_axes(x, layout, f"occlusion {what} {value!r}")
            hw = _pair(value, f"occlusion {what}")
            full = list(dims)  # channels (and any other axis): whole
            full[h], full[w] = hw
            return tuple(full)
        full = tuple(int(v) for v in value)
        if len(full) != len(dims) or any(v < 1 for v in full):
            raise UsageError(f"occlusion {what} {value!r} must give one positive size per input axis {dims}")
        return full


# ---- RISE ------------------------------------------------------------------------------------------------
@register
class Rise(BlackBoxMethod):
    """Randomized Input Sampling for Explanation: score-weighted mean of random smooth masks."""

    name = "rise"
    defaults = {**_COMMON, "n_masks": 1000, "grid": 7, "p": 0.5, "seed": 0, "fill": 0.0}

    def attribute(self, handle, prep, opts):
        x, layout = prep.x, handle.layout
        h_ax, w_ax = sample_axes(x, layout, self.name)
        H, W = x.shape[1:][h_ax], x.shape[1:][w_ax]
        n, p = int(opts["n_masks"]), float(opts["p"])
        if n < 1 or not 0 < p <= 1:
            raise UsageError(f"rise needs n_masks >= 1 and 0 < p <= 1 (got {n}, {p})")
        masks = RiseMasks(n, _pair(opts["grid"], "rise grid"), p, (H, W), int(opts["seed"]))
        fill = float(opts["fill"])
        progress = _progress(self.name, n * x.shape[0], opts["progress"])
        maps = np.zeros((x.shape[0], H, W), dtype=np.float64)
        size = opts["batch_size"]
        for i in range(x.shape[0]):
            xi = x[i]
            for sl in iter_chunks(n, size):  # masks are built once per chunk and never all in memory
                rows = np.arange(sl.start, sl.stop)
                m = masks.get(rows)  # (r, H, W)
                mb = m[:, None] if (xi.ndim == 3 and layout == "NCHW") else (m[..., None] if xi.ndim == 3 else m)
                batch = xi[None] * mb.astype(xi.dtype, copy=False)
                if fill:
                    batch += np.asarray(fill, dtype=xi.dtype) * (1 - mb)
                scores = scores_of(handle, batch, prep.target.take(np.full(len(rows), i)))
                maps[i] += np.tensordot(scores, m, axes=1)
                progress.advance(len(rows))
        maps /= n * p
        return broadcast_map(maps, x, layout), {"n_masks": n, "grid": list(masks.grid), "p": p,
                                                "forward_passes": n * x.shape[0]}


@register
class DRise(Rise):
    """D-RISE: RISE whose mask weights are the detection similarity of the masked input (module docs)."""

    name = "drise"
    task = "detection"
    # Detected objects are small parts of the image: a finer grid than RISE's 7, as the paper's 16.
    defaults = {**Rise.defaults, "grid": 16}

    def attribute(self, handle, prep, opts):
        if not isinstance(prep.target, Detection):
            raise UsageError("drise explains one detected box", hint="use --task detection (a Detection target)")
        return super().attribute(handle, replace(prep, target=replace(prep.target, match="max")), opts)


class RiseMasks:
    """Deterministic RISE masks: Bernoulli(p) grids, bilinearly upsampled to (grid+1) cells, randomly shifted.

    ``get(rows)`` rebuilds any subset from the stored grids and shifts, so a chunked run uses the same
    masks as an unchunked one.
    """

    def __init__(self, n: int, grid: tuple[int, int], p: float, size: tuple[int, int], seed: int):
        rng = np.random.default_rng(seed)
        self.grid, self.size = grid, size
        self.cells = (math.ceil(size[0] / grid[0]), math.ceil(size[1] / grid[1]))
        self.grids = (rng.random((n,) + grid) < p).astype(np.float32)
        self.shifts = np.stack([rng.integers(0, c, n) for c in self.cells], -1)
        up = [(g + 1) * c for g, c in zip(grid, self.cells, strict=True)]
        self._interp = [linear_matrix(g, u) for g, u in zip(grid, up, strict=True)]

    def get(self, rows: np.ndarray) -> np.ndarray:
        ry, rx = self._interp
        up = ry @ self.grids[rows] @ rx.T  # (r, upH, upW): separable bilinear upsampling
        H, W = self.size
        out = np.empty((len(rows), H, W), dtype=np.float32)
        for k, (dy, dx) in enumerate(self.shifts[rows]):
            out[k] = up[k, dy:dy + H, dx:dx + W]
        return out


# ---- KernelSHAP on grid cells ------------------------------------------------------------------------------
@register
class KernelShap(BlackBoxMethod):
    """Shapley values of a grid of cells, by Kernel SHAP's weighted least squares."""

    name = "kernelshap"
    defaults = {**_COMMON, "grid": 8, "n_samples": 512, "fill": 0.0, "seed": 0}

    def attribute(self, handle, prep, opts):
        x, layout = prep.x, handle.layout
        h_ax, w_ax = sample_axes(x, layout, self.name)
        H, W = x.shape[1:][h_ax], x.shape[1:][w_ax]
        gh, gw = _pair(opts["grid"], "kernelshap grid")
        gh, gw = min(gh, H), min(gw, W)
        cell_of = (np.minimum(np.arange(H) * gh // H, gh - 1)[:, None] * gw
                   + np.minimum(np.arange(W) * gw // W, gw - 1)[None, :])  # (H, W) -> cell index
        M = gh * gw
        Z, weights, exact = coalitions(M, int(opts["n_samples"]), int(opts["seed"]))
        rows = np.vstack([np.zeros((1, M), bool), Z])  # row 0: every cell absent (the baseline)
        fill = float(opts["fill"])
        progress = _progress(self.name, len(rows) * x.shape[0], opts["progress"])
        maps = np.zeros((x.shape[0], H, W), dtype=np.float64)
        phis = []
        for i in range(x.shape[0]):
            xi = x[i]

            def build(lo, hi, xi=xi):
                keep = rows[lo:hi][:, cell_of]  # (r, H, W)
                keep = keep[:, None] if (xi.ndim == 3 and layout == "NCHW") else (
                    keep[..., None] if xi.ndim == 3 else keep)
                return np.where(keep, xi[None], np.asarray(fill, dtype=xi.dtype))

            f = score_rows(handle, prep.target, len(rows), build, np.full(len(rows), i), opts["batch_size"],
                           progress=progress)
            phi = solve_shapley(Z, weights, f[1:], base=f[0], full=float(prep.scores[i]))
            phis.append(phi)
            maps[i] = phi[cell_of]
        return broadcast_map(maps, x, layout), {
            "grid": [gh, gw], "coalitions": len(Z), "exact": exact, "forward_passes": len(rows) * x.shape[0],
            "shapley_values": np.asarray(phis).tolist()}


def coalitions(M: int, n_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """Coalitions (rows of present features, never empty or full) and their regression weights.

    Every coalition with its exact Shapley-kernel weight when ``2**M - 2 <= n_samples``; otherwise
    coalitions drawn from the kernel's size distribution (in complementary pairs) with equal weights.
    """
    if M < 2:
        raise UsageError("kernelshap needs at least 2 cells", hint="use a larger grid")
    if M < 31 and 2 ** M - 2 <= n_samples:
        codes = np.arange(1, 2 ** M - 1)
        Z = ((codes[:, None] >> np.arange(M)) & 1).astype(bool)
        k = Z.sum(1)
        w = (M - 1) / (np.array([math.comb(M, int(s)) for s in k], dtype=np.float64) * k * (M - k))
        return Z, w, True
    rng = np.random.default_rng(seed)
    sizes = np.arange(1, M)
    prob = (M - 1) / (sizes * (M - sizes))
    prob /= prob.sum()
    half = max(1, n_samples // 2)
    Z = np.zeros((2 * half, M), dtype=bool)
    for r, k in enumerate(rng.choice(sizes, size=half, p=prob)):
        Z[2 * r, rng.choice(M, size=k, replace=False)] = True
        Z[2 * r + 1] = ~Z[2 * r]
    return Z, np.ones(len(Z)), False


def solve_shapley(Z: np.ndarray, w: np.ndarray, f: np.ndarray, *, base: float, full: float) -> np.ndarray:
    """Weighted least squares for phi with sum(phi) = full - base (the efficiency constraint).

    The last feature is eliminated with the constraint: f - base - z_M (full - base) = sum_j phi_j (z_j - z_M).
    """
    z = Z.astype(np.float64)
    total = full - base
    y = f - base - z[:, -1] * total
    A = z[:, :-1] - z[:, -1:]
    sw = np.sqrt(w)[:, None]
    head, *_ = np.linalg.lstsq(A * sw, y * sw[:, 0], rcond=None)
    return np.append(head, total - head.sum())
