"""The gradient family: saliency, input x gradient, integrated gradients, guided backprop, deconvnet.

Each method is one ``attribute(handle, x, target, sample, opts)`` over ``handle.vjp``: ``x`` is a batch
of rows, ``target`` is resolved for exactly those rows, and ``sample`` maps each row to the caller's
sample (for per-sample options such as a user baseline). ``__call__`` adds what every method shares:
one forward to resolve the target, capability gating, eval mode, and the Attribution. Wrappers
(``wrappers.py``) call ``attribute`` on their own rows, so any gradient method composes with them.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np
from array_api_compat import array_namespace

from .._batching import scores_of
from .._image_ops import gaussian_blur, spatial_axes
from ..errors import CapabilityError, UsageError
from ..targets import Target
from ._chunking import accumulate, accumulator, auto_batch_size, run_rows
from ._common import Prepared, attribution, contrast_of, prepare, resolved
from ._gating import require
from .base import Attribution, Method, register


class GradientMethod(Method):
    """Base of the gradient family; subclasses override ``attribute`` (and maybe the hooks below)."""

    family: ClassVar[str] = "gradient"
    requires: ClassVar[frozenset[str]] = frozenset({"forward", "gradient"})

    def __call__(self, handle, x, target: Target | None = None, *, layer: str | None = None,
                 verify: bool = True, contrast: bool = False, **options) -> Attribution:
        """``contrast=True`` also computes the runner-up class's map for the health checks, from the
        same forward where the method has one pass (else from the input gradients at x)."""
        opts = self.options(options)
        with handle.session():
            # A pass on x resolves the target on the way: the method's own (single-pass methods) or the
            # class check's (the others), so neither needs a forward of its own to resolve it.
            prep = prepare(handle, x, target, resolve=not (self.single_pass or contrast))
            if verify:
                require(handle, prep.x, prep.target, self)
            runner = None
            if contrast and not self.single_pass:  # plain gradients at x, outside the method's context
                res = handle.vjp(prep.x, prep.target, contrast=True)
                prep = resolved(prep, res)
                runner = contrast_of(res, explained=res.input_grad, measured_on="input gradient at x")
            with self.pass_context(handle, opts) as state:
                if self.single_pass:
                    res = handle.vjp(prep.x, prep.target, contrast=contrast)
                    prep = resolved(prep, res)
                    values = self.from_grad(prep.x, checked_grad(handle, res))
                    other = res.contrast
                    runner = contrast_of(res, None if other is None or other.input_grad is None
                                         else self.from_grad(prep.x, other.input_grad))
                else:  # many passes: in and out of the model's device once, around the loop
                    ops = handle.ops
                    values = ops.to_numpy(self.attribute(handle, ops.asarray(prep.x), prep.target.on(ops),
                                                         ops.arange(0, len(prep.x)), opts))
            info, warnings = self.summarize(state, opts)
            more_info, more_warnings = self.finish(handle, prep, values, opts)
        return attribution(self, handle, prep, values, opts, info={**info, **more_info},
                           warnings=[*warnings, *more_warnings], contrast=runner)

    # ---- the steps a subclass overrides ------------------------------------------------------------
    single_pass: ClassVar[bool] = False  # True: values come from one input gradient via ``from_grad``

    def attribute(self, handle, x, target: Target, sample, opts: dict[str, Any]):
        """Attributions of rows ``x`` for a target resolved on exactly those rows; ``x``, ``sample`` and
        the result are ``handle.ops`` arrays (tensors on the model's device for PyTorch)."""
        return self.from_grad(x, input_gradient(handle, x, target))

    def from_grad(self, x: np.ndarray, grad: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @contextmanager
    def pass_context(self, handle, opts: dict[str, Any]):
        """Wraps every pass of one explanation (guided backprop overrides ReLU here)."""
        yield None

    def summarize(self, state, opts: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Findings of ``pass_context`` for the result's ``info`` and ``warnings``."""
        return {}, []

    def finish(self, handle, prep: Prepared, values: np.ndarray,
               opts: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Checks on the finished attribution (IG reports its completeness delta here)."""
        return {}, []


def input_gradient(handle, x: np.ndarray, target: Target) -> np.ndarray:
    """d(score)/d(input) for a batch; refuses loudly if no gradient reaches the input."""
    return checked_grad(handle, handle.vjp(x, target))


def checked_grad(handle, res) -> np.ndarray:
    if res.input_grad is None:
        raise CapabilityError("no gradient reaches the input on this pass",
                              path=handle.source.path, format=handle.source.format,
                              hint="run `xaiready check` to see where the gradient path breaks")
    return res.input_grad


@register
class Saliency(GradientMethod):
    """|d score / d x| (Simonyan et al. 2014, https://arxiv.org/abs/1312.6034); ``gradient`` is signed."""

    name = "saliency"
    single_pass = True
    absolute: ClassVar[bool] = True

    def from_grad(self, x, grad):
        return array_namespace(grad).abs(grad) if self.absolute else grad


@register
class Gradient(Saliency):
    """The signed input gradient d score / d x."""

    name = "gradient"
    absolute = False


@register
class InputXGradient(GradientMethod):
    """x * d score / d x (Shrikumar et al. 2016, https://arxiv.org/abs/1605.01713)."""

    name = "input-x-gradient"
    single_pass = True

    def from_grad(self, x, grad):
        return x * grad


# ---- integrated gradients -------------------------------------------------------------------------------
IG_METHODS = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")


def path_points(method: str, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(alphas, step weights) of the quadrature, with Captum's definitions of each rule.

    Note Captum's ``riemann_trapezoid``: n points over [0, 1] with end weights 1/(2n), so its weights sum
    to (n-1)/n; kept as is so results agree with Captum (the completeness delta shows the shortfall).
    """
    if method not in IG_METHODS:
        raise UsageError(f"unknown integration method '{method}'", hint=f"use one of {', '.join(IG_METHODS)}")
    n = int(n_steps)
    if n < (1 if method == "gausslegendre" else 2):
        raise UsageError(f"n_steps={n} is too small for {method}", hint="use at least 2 steps")
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n)
        return 0.5 * (1 + nodes), 0.5 * weights
    steps = np.full(n, 1.0 / n)
    if method == "riemann_trapezoid":
        steps[0] /= 2
        steps[-1] /= 2
        return np.linspace(0, 1, n), steps
    lo, hi = {"riemann_left": (0, 1 - 1 / n), "riemann_right": (1 / n, 1),
              "riemann_middle": (1 / (2 * n), 1 - 1 / (2 * n))}[method]
    return np.linspace(lo, hi, n), steps


def make_baseline(kind: Any, x: np.ndarray, sample: np.ndarray, layout: str, *, sigma: float = 5.0,
                  seed: int = 0) -> np.ndarray:
    """The IG baseline for rows ``x`` (sample ``sample`` each): zeros, blur, uniform noise or an array."""
    if isinstance(kind, np.ndarray) or not isinstance(kind, str):
        base = np.asarray(kind, dtype=x.dtype)
        if base.shape == x.shape[1:] or (base.ndim == x.ndim and base.shape[0] == 1):
            return np.broadcast_to(base.reshape((1,) + x.shape[1:]), x.shape)
        if base.ndim == x.ndim and base.shape[1:] == x.shape[1:]:
            return base[sample]  # one baseline per caller's sample
        raise UsageError(f"baseline of shape {base.shape} does not fit inputs of shape {x.shape}",
                         hint="give one baseline per sample, or one for all")
    if kind == "zeros":
        return np.zeros_like(x)
    if kind == "blur":
        if x.ndim != 4:
            raise UsageError("a blur baseline needs image inputs (N, C, H, W) or (N, H, W, C)")
        return gaussian_blur(x, sigma, spatial_axes(x, layout))
    if kind == "uniform":
        # Uniform over each sample's own value range; seeded per caller's sample so chunking cannot
        # change it.
        flat = x.reshape(len(x), -1)
        lo, hi = flat.min(1), flat.max(1)
        out = np.empty_like(x)
        for row, s in enumerate(sample):
            rng = np.random.default_rng([seed, int(s)])
            out[row] = rng.uniform(lo[row], hi[row], size=x.shape[1:]).astype(x.dtype)
        return out
    raise UsageError(f"unknown baseline '{kind}'", hint="use zeros, blur, uniform, or an array (.npy)")


@register
class IntegratedGradients(GradientMethod):
    """(x - b) * integral of d score / d x along the straight path from baseline b to x.

    Sundararajan et al. 2017, https://arxiv.org/abs/1703.01365. The path points run in chunks of
    ``batch_size`` rows and their weighted gradients are summed on the fly, so memory does not grow
    with ``n_steps``. ``info["delta"]`` is the completeness gap sum(attr) - (f(x) - f(b)) per sample.
    """

    name = "integrated-gradients"
    defaults = {"n_steps": 50, "integration": "gausslegendre", "baseline": "zeros", "blur_sigma": 5.0, "seed": 0,
                "batch_size": None}

    def attribute(self, handle, x, target, sample, opts):
        ops = handle.ops
        xp = ops.xp
        alphas, weights = path_points(opts["integration"], opts["n_steps"])
        alphas, weights = ops.asarray(alphas.astype(np.float32)), ops.asarray(weights, dtype="float64")
        base = self.baseline(handle, x, sample, opts)
        diff = x - base
        total = accumulator(xp, x)
        per_row = (-1,) + (1,) * (x.ndim - 1)
        n = alphas.shape[0]
        run_rows(ops, x.shape[0], n, auto_batch_size(x, opts["batch_size"], handle=handle),
                 make_rows=lambda c: xp.take(base, c.sample, axis=0)
                 + xp.reshape(xp.take(alphas, c.k), per_row) * xp.take(diff, c.sample, axis=0),
                 attribute=lambda rows, s: input_gradient(handle, rows, target.take(s)),
                 reduce=lambda c, g: accumulate(xp, total, c, n, g, xp.take(weights, c.k)))
        return total * xp.astype(diff, total.dtype)

    def baseline(self, handle, x, sample, opts):
        """The baseline rows in ``x``'s arrays: zeros where ``x`` is; others are built in NumPy (one copy
        each way per call, outside the chunk loop)."""
        if isinstance(opts["baseline"], str) and opts["baseline"] == "zeros":
            return array_namespace(x).zeros_like(x)
        ops = handle.ops
        return ops.asarray(make_baseline(opts["baseline"], ops.to_numpy(x), ops.to_numpy(sample), handle.layout,
                                         sigma=opts["blur_sigma"], seed=opts["seed"]))

    def finish(self, handle, prep, values, opts):
        base = make_baseline(opts["baseline"], prep.x, np.arange(len(prep.x)), handle.layout,
                             sigma=opts["blur_sigma"], seed=opts["seed"])
        gap = prep.scores - scores_of(handle, base, prep.target)
        delta = values.reshape(len(values), -1).astype(np.float64).sum(1) - gap
        # relative to the score change, but not blown up where f(x) and f(b) happen to coincide
        scale = np.maximum(np.abs(gap), 1e-3 * (np.abs(prep.scores) + np.abs(prep.scores - gap)) + 1e-12)
        rel = np.abs(delta) / scale
        info = {"delta": delta.tolist(), "delta_rel_max": float(rel.max()), "n_steps": int(opts["n_steps"]),
                "integration": opts["integration"],
                "batch_size": auto_batch_size(prep.x, opts["batch_size"], handle=handle)}
        warnings = []
        if rel.max() > 0.05:
            warnings.append(f"completeness gap {float(rel.max()):.1%} of f(x) - f(baseline): the path integral "
                            "is not converged; raise n_steps")
        return info, warnings


# ---- ReLU rule overrides ---------------------------------------------------------------------------------
class _ReluRule(GradientMethod):
    """The input gradient with every ReLU's backward replaced (at the function level, by the backend)."""

    mode: ClassVar[str] = ""
    single_pass = True

    @contextmanager
    def pass_context(self, handle, opts):
        with handle.relu_override(self.mode) as stats:
            yield stats

    def from_grad(self, x, grad):
        return grad

    def summarize(self, stats, opts):
        return override_findings(self.name, stats)


def override_findings(name: str, stats) -> tuple[dict[str, Any], list[str]]:
    """Counts of what the ReLU override intercepted, and a warning when it is not the full rule."""
    if stats is None:
        return {}, []
    info = {"relu_override": stats.to_dict()}
    warnings = []
    if stats.note:
        warnings.append(f"{name}: {stats.note}")
    if stats.not_overridable:
        ran = ", ".join(f"{k} x{v}" for k, v in sorted(stats.not_overridable.items()))
        warnings.append(f"{name}: the forward ran activations whose gradient cannot be overridden ({ran}); "
                        "they keep plain gradients, so this is only partly " + name)
    if stats.overridden == 0:
        warnings.append(f"{name}: no ReLU was overridden ({stats.relu_calls} ReLU call(s) ran), so the "
                        "result equals the plain gradient")
    return info, warnings


@register
class GuidedBackprop(_ReluRule):
    """Guided backpropagation (Springenberg et al. 2015, https://arxiv.org/abs/1412.6806)."""

    name = "guided-backprop"
    mode = "guided"


@register
class Deconvnet(_ReluRule):
    """Deconvnet (Zeiler & Fergus 2014, https://arxiv.org/abs/1311.2901): ReLU passes positive gradients."""

    name = "deconvnet"
    mode = "deconvnet"
