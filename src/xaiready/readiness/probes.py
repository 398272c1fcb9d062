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
STEP_FRACTIONS = (1e-3, 1e-4, 1e-2)  # predicted score change / (|score| + 1), tried in this order


@dataclass
class FDResult:
    ok: bool
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
    """Compare autograd directional derivatives with central finite differences, per sample."""
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    flat_g = grad.reshape(n, -1).astype(np.float64)
    gnorm = np.linalg.norm(flat_g, axis=1)
    live = gnorm > 0
    dirs = [np.where(live[:, None], flat_g / np.maximum(gnorm, 1e-300)[:, None], 0.0)]
    for _ in range(n_random):
        r = rng.standard_normal(flat_g.shape)
        dirs.append(r / np.linalg.norm(r, axis=1, keepdims=True))
    d = np.stack(dirs)  # (D, N, P), unit norm per sample
    ad = np.einsum("dnp,np->dn", d, flat_g)  # autograd directional derivatives
    xnorm = np.linalg.norm(x.reshape(n, -1).astype(np.float64), axis=1)
    cap = 0.05 * np.maximum(xnorm, np.sqrt(flat_g.shape[1]) * 1e-2)  # never leave the input's neighbourhood
    eps = float(np.finfo(np.float32).eps)
    worst, best_err = np.inf, None
    for frac in STEP_FRACTIONS:
        delta = frac * (np.abs(scores) + 1.0)  # (N,)
        h = np.minimum(delta[None, :] / np.maximum(np.abs(ad), 1e-12), cap[None, :])  # (D, N)
        step = (h[..., None] * d).reshape((-1,) + x.shape[1:]).astype(x.dtype)
        base = np.tile(x, (len(d),) + (1,) * (x.ndim - 1))
        batch = np.concatenate([base + step, base - step])
        index = np.tile(np.arange(n), 2 * len(d))
        s = _scores(handle, batch, target, index, chunk).reshape(2, len(d), n)
        fd = (s[0] - s[1]) / (2 * h)
        noise = 64 * eps * (np.abs(scores)[None, :] + 1.0) / h  # float32 rounding of the score
        tol = RTOL * np.maximum(np.abs(fd), np.abs(ad)) + noise
        err = np.abs(fd - ad)
        rel = err / np.maximum(np.maximum(np.abs(fd), np.abs(ad)), 1e-12)
        significant = np.abs(ad) > noise  # directions whose derivative rises above rounding
        rel_sig = np.where(significant, rel, 0.0)
        if worst > rel_sig.max():
            worst, best_err = float(rel_sig.max()), (frac, fd, ad)
        if (err <= tol).all():
            return FDResult(True, float(rel_sig.max()), len(d),
                            f"{len(d)} directions x {n} sample(s): max relative error {rel_sig.max():.1e} "
                            f"(tolerance {RTOL:g}), step fraction {frac:g}")
    frac, fd, ad = best_err
    i = np.unravel_index(np.argmax(np.abs(fd - ad)), fd.shape)
    return FDResult(False, worst, len(d),
                    f"finite differences disagree with autograd: along direction {i[0]} of sample {i[1]} "
                    f"autograd says {ad[i]:.4g}, finite differences say {fd[i]:.4g} "
                    f"(relative error {worst:.2g} > {RTOL:g}, at every step size tried)")
