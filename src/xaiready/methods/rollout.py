"""Gradient-weighted attention rollout for vision transformers (Chefer, Gur & Wolf 2021).

Chefer, Gur & Wolf, "Generic Attention-model Explainability for Interpreting Bi-Modal and
Encoder-Decoder Transformers" (ICCV 2021, https://arxiv.org/abs/2103.15679), rule for
self-attention, over the attention layers in forward order:

    R = I                                               (B, N, N)
    Abar = mean over heads of ReLU(dA * A)              A: probabilities, dA: d score / d A
    R = R + Abar @ R

The map is the readout row of R over the patch tokens, ``R[:, 0, prefix:]`` for a model that reads
its class token, on the patch grid -> ``raw``; ``values`` = minmax(upsample(raw)).

What the model reads is measured, not assumed: the rows of the last attention whose gradient is not
zero are the tokens the score depends on after the last token mixing. That is the class token for
ViT (Chefer's row 0 exactly), class and distillation tokens for distilled DeiT (their rows are
averaged), the patch tokens for average-pooled models. The prefix length and the grid come from N
and the input size (``readiness.layouts``), never from the architecture's name.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ..errors import CapabilityError, UsageError
from ..readiness.layouts import candidates
from ..targets import Target
from ._common import Prepared, attribution, prepare
from ._gating import require
from .base import Attribution, Method, register
from .cam import degenerate, normalize, spatial_size, upsample

NO_ATTENTION = ("no attention probabilities (B, heads, N, N) were computed in the forward: this is not a "
                "transformer, or its attention is fused in a way xaiready cannot open")


@register
class AttentionRollout(Method):
    """Gradient-weighted attention rollout (Chefer et al. 2021); see the module docstring.

    Family ``cam``: like a CAM it gives one (N, H, W) map per sample, upsampled from a coarse grid
    (the patch grid) and min-max normalized, with the grid map kept as ``raw``; the health checks and
    renderers treat it as such. It takes no layer (every attention layer is used) and needs
    gradients, so it is gated like a gradient method. ``contrast`` is accepted for the common
    signature and ignored: the class check re-explains the runner-up class instead.

    Options: ``interpolation`` (bilinear or nearest) and ``start_layer``, the first attention layer
    the rollout multiplies in (0: all).
    """

    name = "attention-rollout"
    family = "cam"
    # "attention": the model must compute attention probabilities (a transformer); measured when it runs.
    requires: ClassVar[frozenset[str]] = frozenset({"forward", "gradient", "attention"})
    defaults: ClassVar[dict[str, Any]] = {"interpolation": "bilinear", "start_layer": 0}

    def __call__(self, handle, x, target: Target | None = None, *, layer: str | None = None,
                 verify: bool = True, contrast: bool = False, **options) -> Attribution:
        opts = self.options(options)
        if layer is not None:
            raise UsageError(f"{self.name} takes no layer: it uses every attention layer of the model",
                             hint="drop --layer, or use start_layer to skip the first attention layers")
        with handle.session():
            prep = prepare(handle, x, target, resolve=False)  # the attention pass resolves the target
            if prep.x.ndim != 4:
                raise CapabilityError(f"{self.name} needs an image batch, not an input of shape {prep.x.shape}",
                                      path=handle.source.path, format=handle.source.format)
            if verify:
                require(handle, prep.x, prep.target, self)
            res = handle.attention(prep.x, prep.target)
            prep = Prepared(prep.x, res.target, res.output, np.asarray(res.scores, dtype=np.float64))
        if not res.probs:
            raise CapabilityError(NO_ATTENTION, path=handle.source.path, format=handle.source.format,
                                  hint="gradient and CAM methods work on any differentiable model")
        sizes = sorted({p.shape[-1] for p in res.probs})
        if len(sizes) > 1:
            raise CapabilityError(f"the attention layers attend over different token counts {sizes} "
                                  f"({', '.join(res.sites)}): a rollout needs one token set throughout",
                                  path=handle.source.path, format=handle.source.format,
                                  hint="gradient and CAM methods work on any differentiable model")
        start = opts["start_layer"]
        n_layers = len(res.probs)
        if not isinstance(start, (int, np.integer)) or isinstance(start, bool) or not 0 <= start < n_layers:
            raise UsageError(f"start_layer must be an integer in 0..{n_layers - 1}, not {start!r}",
                             hint=f"the model has {n_layers} attention layers")
        size = spatial_size(prep.x, handle.layout)
        n_tokens = sizes[0]
        prefix, grid = self.token_grid(handle, prep.x, n_tokens, size)
        r = rollout(res.probs[start:], res.grads[start:])
        weights, readout, unread = readout_weights(res.grads[-1])
        rel = np.einsum("bi,bij->bj", weights, r)[:, prefix:prefix + grid[0] * grid[1]]
        raw = rel.reshape(len(rel), *grid).astype(np.float32)
        values = normalize(upsample(raw, size, opts["interpolation"]))
        flags = degenerate(raw)
        warnings = [*res.notes, *(f"sample {i}: the raw {self.name} map is {f}, so the normalized map carries no "
                                  "information" for i, f in enumerate(flags) if f)]
        warnings += [f"sample {i}: the last attention has no gradient on any token, so the class token's row was "
                     "used" for i in unread]
        info = {"attention_sites": list(res.sites), "prefix": prefix, "grid": list(grid), "n_layers": n_layers,
                "start_layer": int(start), "readout_tokens": readout, "degenerate": flags,
                "layer_shape": list(grid)}
        return attribution(self, handle, prep, values, opts, raw=raw, info=info, warnings=warnings)

    def token_grid(self, handle, x: np.ndarray, n_tokens: int, size: tuple[int, int]) -> tuple[int, tuple[int, int]]:
        """Prefix length and patch grid of ``n_tokens`` at input ``size``: the only token reading, or
        among several the only one whose patches tile the input exactly (stride * grid = size)."""
        found = [c for c in candidates((x.shape[0], n_tokens, 1), size, x.shape[0]) if c.kind == "tokens"]
        if len(found) > 1:
            found = [c for c in found if c.grid[0] * c.stride == size[0] and c.grid[1] * c.stride == size[1]] or found
        if len(found) != 1:
            readings = ", ".join(f"{c.prefix} prefix + {c.grid[0]}x{c.grid[1]} at stride {c.stride}" for c in found[:4])
            why = f"reads several ways ({readings})" if found else "reads as no prefix plus a patch grid"
            raise CapabilityError(f"the attention's {n_tokens} tokens at input {size[0]}x{size[1]} {why}",
                                  path=handle.source.path, format=handle.source.format,
                                  hint="try another input size, where the token count reads one way only")
        return found[0].prefix, tuple(found[0].grid)


def rollout(probs: list[np.ndarray], grads: list[np.ndarray]) -> np.ndarray:
    """R after every layer: R = I; R = R + mean_heads(ReLU(dA * A)) @ R, in float64. (B, N, N)."""
    b, _, n, _ = probs[0].shape
    r = np.broadcast_to(np.eye(n), (b, n, n)).copy()
    for a, g in zip(probs, grads, strict=True):
        abar = np.maximum(np.asarray(g, np.float64) * np.asarray(a, np.float64), 0).mean(axis=1)
        r = r + abar @ r
    return r


def readout_weights(last_grad: np.ndarray) -> tuple[np.ndarray, list, list[int]]:
    """Per sample, equal weights on the query tokens the score reads (rows of the last attention with a
    non-zero gradient), the tokens read (or how many), and the samples where none is read (the class
    token's row is used for them)."""
    read = np.abs(last_grad).max(axis=(1, 3)) > 0  # (B, N)
    weights = np.zeros(read.shape, dtype=np.float64)
    tokens, unread = [], []
    for i, rows in enumerate(read):
        idx = np.flatnonzero(rows)
        if idx.size == 0:
            idx = np.array([0])
            unread.append(i)
        weights[i, idx] = 1.0 / idx.size
        tokens.append(idx.tolist() if idx.size <= 8 else f"{idx.size} tokens, {idx[0]}..{idx[-1]}")
    return weights, tokens, unread
