"""Gradient probes: does the input gradient exist, is it finite, non-zero, and *correct*?

Correctness is a directional finite-difference check, the decision rule being:

* Directions: the gradient's own direction and ``n_random`` random unit directions per sample. A
  wrong gradient is often wrong only off its own direction (a scale taken through ``.item()`` adds an
  error nearly orthogonal to it), so random directions are what catch it.
* Steps: each direction gets its own step h, sized so the predicted change of the score is a fraction
  (1e-3, 3e-3, 3e-4) of |score| + 1, capped at 5 % of the input's norm. Sizing random directions by
  their own (small) directional derivative keeps their difference far above float32 rounding.
* Agreement: a direction passes if, at any step, the central difference, or either one-sided
  difference (a valid subgradient at a ReLU kink or a max-pool tie), is within 5 % of autograd plus the
  rounding of the score, measured by scoring each sample alone and inside the perturbed batch.
* A *conclusive* disagreement, the only one that fails the check: no step agrees, two step sizes at
  least 3x apart give the same central difference (it has converged), and at one of them the forward
  and backward differences agree with each other (the score is smooth there, not at a kink). Noise,
  kinks and ties make the step sizes or the two sides disagree among themselves; a wrong gradient
  does not. Anything else is "inconclusive" (a warning, never a failure).
* Confirmation: a conclusive disagreement is measured again at a random point 3e-2 x mean|x| away.
  Equal values under a max (a flat image region through max-pooling) are smooth along the probed
  directions yet not differentiable, and they break a hair away; a wrong backward does not. Only a
  disagreement that stays is a failure.
* Samples that are coupled within a batch (a batch-global scale) are measured a whole batch at a time.

``gradient_correctness`` runs the rule as ``check`` does: half-precision models are measured on a
float32 twin of the same weights (their finite differences are rounding noise), and a float32 result
that is not a clean pass is re-measured on the float64 twin along the directions it left unclean
(see ``Backend.full_precision``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._batching import score_rows, scores_of
from ..errors import XaiReadyError
from ..model import ModelHandle
from ..targets import Target
from .report import CheckResult

RTOL = 0.05  # relative disagreement allowed between finite differences and autograd
LOW_PRECISION = ("float16", "bfloat16")
# A half-precision gradient whose cosine with the float32 gradient of the same weights is below this
# is dominated by rounding. Measured on the corpus (tests/corpus, 24 architectures at bfloat16 and
# float16): 0.971 to 1.000.
PRECISION_COSINE = 0.9
# Predicted score change / (|score| + 1), tried in this order; for float32 (float64 scales them by its eps).
STEP_FRACTIONS = (1e-3, 3e-3, 3e-4)


@dataclass
class FDResult:
    ok: bool  # False only for a conclusive disagreement
    conclusive: bool
    max_rel_error: float
    directions: int
    detail: str
    too_small: bool = False  # inconclusive only because float rounding hides the gradient
    one_sided: bool = False  # some direction agreed only through a one-sided difference (a kink)
    unclean: tuple[int, ...] = ()  # the directions that did not agree through a central difference

    @property
    def clean(self) -> bool:
        """A conclusive pass in which every direction's central difference agreed."""
        return self.ok and self.conclusive and not self.one_sided


def gradient_correctness(handle: ModelHandle, x: np.ndarray, target: Target, grad: np.ndarray, *,
                         n_random: int = 2, seed: int = 0) -> tuple[FDResult, CheckResult | None]:
    """The finite-difference check as ``check`` runs it (module docstring), and a ``gradient-precision``
    finding for half-precision models."""
    backend = handle.backend
    precision, finding = getattr(backend, "precision", "float32"), None
    if precision in LOW_PRECISION:
        with backend.full_precision("float32"):
            full = handle.vjp(x, target).input_grad
            if full is None or not np.isfinite(full).all() or not full.any():
                return (finite_difference_check(handle, x, target, grad, n_random=n_random, seed=seed),
                        CheckResult("gradient-precision", "fail", f"the {precision} model's gradient exists, "
                                    "but the same weights in float32 give none that is finite and non-zero"))
            fd = finite_difference_check(handle, x, target, full, n_random=n_random, seed=seed)
        cos = _cosine(grad, full)
        finding = CheckResult("gradient-precision", "pass" if cos >= PRECISION_COSINE else "warn",
                              f"the {precision} input gradient has cosine {cos:.4f} with the float32 gradient "
                              f"of the same weights (finite differences are measured in float32; {precision} "
                              "rounding is noise)")
    else:
        fd = finite_difference_check(handle, x, target, grad, n_random=n_random, seed=seed)
    if (fd.ok and not fd.clean) and hasattr(backend, "full_precision"):
        # Not a clean pass: float32 rounding hid the gradient, or steps large enough to be seen above
        # it crossed ReLU kinks. The float64 twin resolves steps a billion times smaller. (A failure
        # has already converged at two steps and stayed at a point away from any ties: it stands.)
        why = "the gradient is too small for float32 differences" if fd.too_small else f"float32 said: {fd.detail}"
        wide = x.astype(np.float64)
        fd_unclean = None if fd.too_small else fd.unclean
        try:
            with backend.full_precision("float64"):
                fd = finite_difference_check(handle, wide, target, handle.vjp(wide, target).input_grad,
                                             n_random=n_random, seed=seed, only=fd_unclean)
        except XaiReadyError:  # a forward that insists on its own dtype: keep the float32 finding
            return fd, finding
        fd.detail += f" (re-measured on the float64 twin, {'every direction' if not fd_unclean else 'the unclean directions'}: {why})"
    if not fd.ok and getattr(target, "raw_output", False) and hasattr(backend, "detaches_held"):
        fd = _with_detaches_held(handle, x, target, grad, fd, n_random, seed)
    return fd, finding


def _with_detaches_held(handle, x, target, grad, fd: FDResult, n_random: int, seed: int) -> FDResult:
    """A detector's failed comparison, measured again on the function autograd differentiates: the
    tensors the model detaches (torchvision detaches its RPN proposals, so boxes move with the input
    while their gradient holds them fixed) replayed from ``x``, one sample at a time. Agreement there
    is a warning that names the detach sites, not a pass: the explanation holds those tensors fixed."""
    sites: list[str] = []
    for s in range(x.shape[0]):
        one = np.array([s])
        with handle.backend.detaches_held(x[one]) as found:
            if not found:
                return fd
            sites += found
            held = finite_difference_check(handle, x[one], target.take(one), grad[one], n_random=n_random,
                                           seed=seed, chunk=1)
        if not held.ok:
            return fd
    where = ", ".join(f"'{s}'" for s in dict.fromkeys(sites))
    return FDResult(True, False, fd.max_rel_error, fd.directions,
                    f"autograd agrees with finite differences once the tensors the model detaches (in or after {where}) "
                    f"are held at their values on this input; the explanation treats them as constants, as "
                    f"the model's own gradient does (the model itself: {fd.detail})")


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(-1).astype(np.float64), b.reshape(-1).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _scores(handle: ModelHandle, x: np.ndarray, target: Target, sample_index: np.ndarray,
            chunk: int) -> np.ndarray:
    """Target scores of a batch of perturbed copies, in the model's precision; ``sample_index`` maps
    rows to original samples."""
    return score_rows(handle, target, len(x), lambda lo, hi: x[lo:hi], sample_index, chunk, dtype=None)


def finite_difference_check(handle: ModelHandle, x: np.ndarray, target: Target, grad: np.ndarray,
                            *, n_random: int = 2, seed: int = 0, chunk: int = 16, confirm: bool = True,
                            only: tuple[int, ...] | None = None) -> FDResult:
    """Compare autograd directional derivatives with finite differences, per sample (rule above).

    Perturbed copies of the samples are scored together in batches. A model whose output for one
    sample depends on the rest of its batch (a batch-global scale, batch statistics) is detected, since
    the unperturbed samples then score differently inside such a batch, and is measured instead one
    whole batch per forward, against the gradient of the batch's summed score. The unperturbed scores
    are measured with the same forward as the perturbed ones, so one-sided differences compare alike.
    """
    n = x.shape[0]
    s0 = _scores(handle, x, target, np.arange(n), chunk)

    def per_sample(rows, index):
        return _scores(handle, rows, target, index, chunk)

    result = _directional_check(x, grad, s0, per_sample, n_random, seed, only)
    if result is None:
        result = _whole_batch_check(handle, x, target, grad, s0, n_random, seed, only)
    if result.ok or not confirm:
        return result
    # Equal values under a max (a flat image region through max-pooling) make the score smooth along
    # the probed directions but not differentiable at x: autograd's choice of one maximum disagrees
    # with the differences. Such ties break a hair away from x; a wrong backward does not go away.
    scale = 3e-2 * max(float(np.abs(x).mean()), 1e-6)  # farther from the ties than any step goes
    nearby = (x + scale * np.random.default_rng(seed + 1).standard_normal(x.shape)).astype(x.dtype)
    grad_nearby = handle.vjp(nearby, target).input_grad
    again = None if grad_nearby is None else finite_difference_check(
        handle, nearby, target, grad_nearby, n_random=n_random, seed=seed, chunk=chunk, confirm=False, only=only)
    if again is not None and again.ok:
        return FDResult(True, False, result.max_rel_error, result.directions,
                        f"inconclusive: {result.detail}; but a point {scale:.1g} away (random) agrees, so the "
                        "input sits on a point where the model is not differentiable (ties under a max, "
                        "e.g. a flat image region), not on a wrong backward")
    result.detail += "; confirmed at a nearby point"
    return result


def _whole_batch_check(handle, x, target, grad, s0, n_random, seed, only) -> FDResult:
    def whole_batch(rows, _index):  # each row is the whole batch
        return np.array([scores_of(handle, r, target, dtype=None).sum() for r in rows])

    result = _directional_check(x[None], grad[None], s0.sum()[None], whole_batch, n_random, seed, only)
    result.detail += ("; the model's output for one sample depends on the other samples of its batch (a "
                      "batch-global scale or batch statistics), so each perturbation was a whole batch")
    return result


def _directional_check(x, grad, s0, score_rows, n_random, seed, only=None) -> FDResult | None:
    """The rule of this module on samples ``x`` (None when the samples turn out to be coupled);
    ``only``: re-measure just these of the directions (the float64 twin re-measures the unclean ones)."""
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    flat_g = grad.reshape(n, -1).astype(np.float64)
    size = flat_g.shape[1]
    gnorm = np.linalg.norm(flat_g, axis=1)
    dirs = [flat_g / np.maximum(gnorm, 1e-300)[:, None]]
    for _ in range(n_random):
        r = rng.standard_normal(flat_g.shape)
        dirs.append(r / np.linalg.norm(r, axis=1, keepdims=True))
    d = np.stack(dirs)  # (D, N, P), unit norm per sample
    if only:
        d = d[list(only)]
    ad = np.einsum("dnp,np->dn", d, flat_g)  # autograd directional derivatives
    slope = np.maximum(np.abs(ad), gnorm[None, :] / np.sqrt(size))  # expected |derivative| per direction
    xnorm = np.linalg.norm(x.reshape(n, -1).astype(np.float64), axis=1)
    cap = 0.05 * np.maximum(xnorm, np.sqrt(size) * 1e-2)  # never leave the input's neighbourhood
    eps = float(np.finfo(np.float64 if x.dtype == np.float64 else np.float32).eps)
    centrals, tols, steps, smooth, agree, central_agree = [], [], [], [], None, None
    for frac in STEP_FRACTIONS:
        frac *= eps / np.finfo(np.float32).eps  # the fractions are for float32; float64 resolves finer
        delta = frac * (np.abs(s0) + 1.0)  # (N,)
        h = np.minimum(delta[None, :] / np.maximum(slope, 1e-300), cap[None, :])  # (D, N)
        step = (h[..., None] * d).reshape((-1,) + x.shape[1:]).astype(x.dtype)
        base = np.tile(x, (len(d),) + (1,) * (x.ndim - 1))
        index = np.tile(np.arange(n), 2 * len(d))
        probe = n if agree is None else 0  # the first batch also scores x itself
        rows = np.concatenate([base + step, base - step] + ([x] if probe else []))
        s = score_rows(rows, np.concatenate([index, np.arange(probe)]))
        if probe:
            # Coupled samples score differently inside a batch of perturbed copies. What counts as
            # different is relative to the change a step makes, since float64 steps are tiny.
            drift = np.abs(s[-probe:] - s0)
            if (drift > np.maximum(0.01 * delta, 64 * eps * (np.abs(s0) + 1))).any():
                return None
            # The score's rounding, measured: the same sample scored alone and inside a bigger batch.
            rounding = np.maximum(4 * drift, 64 * eps * (np.abs(s0) + 1.0))
        s = s[:len(s) - probe].reshape(2, len(d), n)
        central, forward, backward = (s[0] - s[1]) / (2 * h), (s[0] - s0) / h, (s0 - s[1]) / h
        noise = rounding[None, :] / h  # what rounding does to a difference quotient at this step
        by_central = _close(central, ad, noise)
        ok = by_central | _close(forward, ad, 2 * noise) | _close(backward, ad, 2 * noise)
        agree = ok if agree is None else agree | ok
        central_agree = by_central if central_agree is None else central_agree | by_central
        centrals.append(central)
        tols.append(noise)
        steps.append(h)
        smooth.append(_close(forward, backward, 4 * noise, rtol=2 * RTOL))
        if agree.all():
            rel = np.abs(central - ad) / np.maximum(np.maximum(np.abs(central), np.abs(ad)), 1e-12)
            worst = float(np.where(ok & (np.abs(ad) > noise), rel, 0).max())
            if not (np.abs(ad[0]) > noise[0]).all():  # agreement within rounding says nothing
                return FDResult(True, False, worst, len(d),
                                f"inconclusive: the gradient (norm {gnorm.min():.2g}) is too small for finite "
                                "differences to measure above the float rounding of the score", too_small=True)
            one_sided = not central_agree.all()
            unclean = _indices(~central_agree, only)
            return FDResult(True, True, worst, len(d),
                            f"{len(d)} directions x {n} sample(s) agree with finite differences "
                            f"(max relative error {worst:.1e} above float rounding, tolerance {RTOL:g}"
                            f"{'; some only one-sided, at a kink' if one_sided else ''})", one_sided=one_sided,
                            unclean=unclean)
    # Which disagreeing directions have a converged central difference at a smooth point?
    converged = np.zeros_like(agree)
    for a in range(len(centrals)):
        for b in range(a + 1, len(centrals)):
            close = _close(centrals[a], centrals[b], tols[a] + tols[b])
            distinct = np.maximum(steps[a], steps[b]) >= 3 * np.minimum(steps[a], steps[b])  # not both capped
            converged |= close & distinct & (smooth[a] | smooth[b])
    lies = converged & ~agree
    i = np.unravel_index(np.argmax(lies) if lies.any() else np.argmax(~agree), agree.shape)
    fd = centrals[0][i]
    rel = abs(fd - ad[i]) / max(abs(fd), abs(ad[i]), 1e-12)
    k = only[i[0]] if only else i[0]  # numbered as in the full set of directions
    where = f"direction {k} ({'gradient' if k == 0 else 'random'}) of sample {i[1]}"
    if lies.any():
        return FDResult(False, True, float(rel), len(d), detail=
                        f"finite differences disagree with autograd along {where}: autograd says {ad[i]:.4g}, "
                        f"finite differences say {fd:.4g} ({rel:.0%} off) at two step sizes that agree with "
                        "each other, where the score is smooth")
    return FDResult(True, False, float(rel), len(d), unclean=_indices(~agree, only), detail=
                    f"inconclusive along {where}: finite differences vary with the step size or between the "
                    f"two sides (float rounding, kinks or ties; autograd {ad[i]:.4g}, finite differences "
                    f"{fd:.4g})")


def _indices(bad: np.ndarray, only) -> tuple[int, ...]:
    """Directions (rows of a (D, N) mask) with any bad sample, numbered as in the full set."""
    rows = [int(i) for i in np.flatnonzero(bad.any(axis=1))]
    return tuple(only[i] for i in rows) if only else tuple(rows)


def _close(a: np.ndarray, b: np.ndarray, atol: np.ndarray, rtol: float = RTOL) -> np.ndarray:
    return np.abs(a - b) <= rtol * np.maximum(np.abs(a), np.abs(b)) + atol
