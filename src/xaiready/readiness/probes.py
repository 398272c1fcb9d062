"""Gradient probes: does the input gradient exist, is it finite, non-zero, and *correct*?

Correctness is a directional finite-difference check: along the gradient's own direction and a few
random directions, (s(x + h d) - s(x - h d)) / 2h must agree with <grad, d>. The step h is chosen so
the predicted change of the score is a small fraction of the score (well above float rounding), and
a disagreement is re-measured with smaller steps before it is called a lie, because piecewise-linear
networks can cross a kink within one step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backends.base import iter_chunks
from ..model import ModelHandle
from ..targets import Target

RTOL = 0.05  # relative disagreement allowed between finite differences and autograd
STEP_FRACTIONS = (1e-3, 1e-2, 1e-4)  # predicted score change / (|score| + 1), tried in this order


@dataclass
class FDResult:
    ok: bool  # False only for a conclusive disagreement
    conclusive: bool
    max_rel_error: float
    directions: int
    detail: str


def _scores(handle: ModelHandle, x: np.ndarray, target: Target, sample_index: np.ndarray,
            chunk: int) -> np.ndarray:
    """Target scores of a batch of perturbed copies; ``sample_index`` maps rows to original samples."""
    out = []
    for sl in iter_chunks(len(x), chunk):
        if target.framework_fn is not None:
            out.append(handle.vjp(x[sl], target, input_grad=False).scores)
        else:
            out.append(target.take(sample_index[sl]).scores(handle.forward(x[sl])))
    return np.concatenate(out)


def finite_difference_check(handle: ModelHandle, x: np.ndarray, target: Target, grad: np.ndarray,
                            scores: np.ndarray, *, n_random: int = 2, seed: int = 0,
                            chunk: int = 16) -> FDResult:
    """Compare autograd directional derivatives with central finite differences, per sample.

    A direction passes if finite differences agree with autograd at any step size. It is a
    *conclusive* disagreement only when two step sizes agree with each other (the finite difference
    has converged) but not with autograd: noise and kinks make step sizes disagree among themselves,
    a lying backward does not.
    """
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    flat_g = grad.reshape(n, -1).astype(np.float64)
    gnorm = np.linalg.norm(flat_g, axis=1)
    dirs = [flat_g / np.maximum(gnorm, 1e-300)[:, None]]
    for _ in range(n_random):
        r = rng.standard_normal(flat_g.shape)
        dirs.append(r / np.linalg.norm(r, axis=1, keepdims=True))
    d = np.stack(dirs)  # (D, N, P), unit norm per sample
    ad = np.einsum("dnp,np->dn", d, flat_g)  # autograd directional derivatives
    xnorm = np.linalg.norm(x.reshape(n, -1).astype(np.float64), axis=1)
    cap = 0.05 * np.maximum(xnorm, np.sqrt(flat_g.shape[1]) * 1e-2)  # never leave the input's neighbourhood
    eps = float(np.finfo(np.float32).eps)
    fds, tols, steps, agree = [], [], [], None
    for frac in STEP_FRACTIONS:
        delta = frac * (np.abs(scores) + 1.0)  # (N,)
        # One input-space step per sample, sized by the gradient norm, for every direction.
        h = np.broadcast_to(np.minimum(delta / np.maximum(gnorm, 1e-12), cap)[None, :], ad.shape)
        step = (h[..., None] * d).reshape((-1,) + x.shape[1:]).astype(x.dtype)
        base = np.tile(x, (len(d),) + (1,) * (x.ndim - 1))
        index = np.tile(np.arange(n), 2 * len(d))
        s = _scores(handle, np.concatenate([base + step, base - step]), target, index, chunk).reshape(2, len(d), n)
        fd = (s[0] - s[1]) / (2 * h)
        noise = 64 * eps * (np.abs(scores)[None, :] + 1.0) / h  # float32 rounding of the score
        fds.append(fd)
        tols.append(noise)
        steps.append(h)
        ok = np.abs(fd - ad) <= RTOL * np.maximum(np.abs(fd), np.abs(ad)) + noise
        agree = ok if agree is None else agree | ok
        if agree.all():
            rel = np.abs(fd - ad) / np.maximum(np.maximum(np.abs(fd), np.abs(ad)), 1e-12)
            worst = float(np.where(ok & (np.abs(ad) > noise), rel, 0).max())
            return FDResult(True, True, worst, len(d),
                            f"{len(d)} directions x {n} sample(s) agree with finite differences "
                            f"(max relative error {worst:.1e} above float32 noise, tolerance {RTOL:g})")
    # Which disagreeing directions have a converged finite difference?
    converged = np.zeros_like(agree)
    for a in range(len(fds)):
        for b in range(a + 1, len(fds)):
            close = np.abs(fds[a] - fds[b]) <= RTOL * np.maximum(np.abs(fds[a]), np.abs(fds[b])) + tols[a] + tols[b]
            distinct = np.maximum(steps[a], steps[b]) >= 3 * np.minimum(steps[a], steps[b])  # not both capped
            converged |= close & distinct
    lies = converged & ~agree
    i = np.unravel_index(np.argmax(lies) if lies.any() else np.argmax(~agree), agree.shape)
    rel = abs(fds[0][i] - ad[i]) / max(abs(fds[0][i]), abs(ad[i]), 1e-12)
    where = f"direction {i[0]} ({'gradient' if i[0] == 0 else 'random'}) of sample {i[1]}"
    if lies.any():
        return FDResult(False, True, float(rel), len(d),
                        f"finite differences disagree with autograd along {where}: autograd says {ad[i]:.4g}, "
                        f"finite differences say {fds[0][i]:.4g} at two step sizes that agree with each other")
    return FDResult(True, False, float(rel), len(d),
                    f"inconclusive along {where}: finite differences vary with the step size (float32 "
                    f"rounding or kinks; autograd {ad[i]:.4g}, finite differences {fds[0][i]:.4g})")
