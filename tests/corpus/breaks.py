"""Each way a gradient path breaks, injected into a real architecture by wrapping one of its modules.

``inject(model, cause, x)`` picks the module from a traced forward (a feature stage in the middle of
the network, or the classification head) and replaces it with a wrapper, so the break sits inside a
model we did not write. It returns the model and what the readiness check must report:
``(verdict, gradient status, break cause, break location)``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from xaiready.testing.zoo import _DoubleGradient  # identity forward, backward claims twice the gradient


class _Wrap(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner


class Detach(_Wrap):
    def forward(self, *a, **k):
        return self.inner(*a, **k).detach()


class NumpyRoundTrip(_Wrap):
    """Through NumPy with ``.detach()`` first: runs, but the path is cut."""

    def forward(self, *a, **k):
        y = self.inner(*a, **k)
        return torch.from_numpy(y.detach().float().cpu().numpy() * 1.0).to(y.device, y.dtype)  # NumPy has no bf16


class NumpyNoDetach(_Wrap):
    """``.numpy()`` on a tensor that requires grad: runs under no_grad only, raises with gradients."""

    def forward(self, *a, **k):
        y = self.inner(*a, **k)
        return torch.from_numpy(y.float().cpu().numpy() * 1.0).to(y.device, y.dtype)


class NoGrad(_Wrap):
    def forward(self, *a, **k):
        with torch.no_grad():
            return self.inner(*a, **k)


class Round(_Wrap):
    def forward(self, *a, **k):
        return torch.round(self.inner(*a, **k) * 4) / 4


class Threshold(_Wrap):
    def forward(self, *a, **k):
        y = self.inner(*a, **k)
        return (y > 0).to(y.dtype)


class LyingBackward(_Wrap):
    def forward(self, *a, **k):
        return _DoubleGradient.apply(self.inner(*a, **k))


class SqrtAtZero(_Wrap):
    """Adds sqrt of a sum that is exactly zero: the forward is unchanged, the backward is NaN."""

    def forward(self, *a, **k):
        y = self.inner(*a, **k)
        return y + torch.sqrt((y * 0).sum(-1, keepdim=True))


class ItemScore(_Wrap):
    """The whole model's scores rebuilt from Python floats."""

    def forward(self, x):
        logits = _logits(self.inner(x))
        return torch.tensor([[v.item() for v in row] for row in logits], dtype=logits.dtype)


class ItemScale(_Wrap):
    """A "temperature" taken through ``.item()``: the gradient ignores the scale's dependence on x."""

    def forward(self, x):
        logits = _logits(self.inner(x))
        return logits / logits.abs().max().item()


class SharedScore(nn.Module):
    """Class-blind: every logit is one shared score (log-sum-exp of the real logits) plus a fixed
    per-class offset, so any class's explained score is the same function of the input."""

    def __init__(self, net, k):
        super().__init__()
        self.net = net
        self.register_buffer("offset", torch.linspace(0, 1, k))

    def forward(self, x):
        return self.net(x).logsumexp(1, keepdim=True) + self.offset


def _logits(out):
    return out.logits if hasattr(out, "logits") else out


# cause -> (wrapper, where, expected verdict, gradient status, break cause)
CAUSES = {
    "detach": (Detach, "stage", "inference-only", "missing", "detach"),
    "numpy": (NumpyRoundTrip, "stage", "inference-only", "missing", "numpy"),
    "numpy-no-detach": (NumpyNoDetach, "stage", "inference-only", "missing", "numpy"),
    "no_grad": (NoGrad, "head", "inference-only", "missing", "no_grad"),
    "item-score": (ItemScore, "root", "inference-only", "missing", "item"),
    "item-scale": (ItemScale, "root", "inference-only", "incorrect", "item"),
    "round": (Round, "head", "inference-only", "zero", "non-differentiable"),
    "threshold": (Threshold, "stage", "inference-only", "missing", "non-differentiable"),
    "lying-backward": (LyingBackward, "stage", "inference-only", "incorrect", "custom-backward"),
    "nan-at-kink": (SqrtAtZero, "stage", "inference-only", "non-finite", "non-differentiable"),
}


def inject(model: nn.Module, cause: str, x: np.ndarray):
    """The model with ``cause`` injected, and (verdict, status, cause, location) the check must find."""
    wrapper, where, verdict, status, expected_cause = CAUSES[cause]
    if where == "root":
        return wrapper(model).eval(), (verdict, status, expected_cause, "(root)")
    names = _pick(model, x, where)
    for name in names:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, wrapper(getattr(parent, attr)).eval())
    # The location is the innermost module whose op cut the path: the wrapper's own forward, except
    # under no_grad, where the wrapped module's ops are the ones that run without gradients. With
    # several heads (DeiT's class and distillation heads), every one is wrapped and any may be named.
    located = tuple(f"{n}.inner" if cause == "no_grad" else n for n in names)
    return model, (verdict, status, expected_cause, located[0] if len(located) == 1 else located)


def _pick(model: nn.Module, x: np.ndarray, where: str) -> list[str]:
    """A module called once whose output is one float tensor: a mid-network feature stage (4-D or
    token output) or the head (the last module with a 2-D output of the class count)."""
    calls: list[tuple[str, tuple]] = []
    counts: dict[str, int] = {}
    handles = []

    def hook(name):
        def fn(_m, _i, out):
            counts[name] = counts.get(name, 0) + 1
            if isinstance(out, torch.Tensor) and out.is_floating_point():
                calls.append((name, tuple(out.shape)))
        return fn

    for name, sub in model.named_modules():
        if name and not isinstance(sub, (nn.Identity, nn.Dropout)):
            handles.append(sub.register_forward_hook(hook(name)))
    try:
        with torch.no_grad():
            out = _logits(model(torch.as_tensor(x, dtype=next(model.parameters()).dtype)))
    finally:
        for h in handles:
            h.remove()
    once = [(n, s) for n, s in calls if counts[n] == 1]
    if where == "head":  # the outermost modules producing the logits
        heads = [n for n, s in once if s == tuple(out.shape)]
        depth = min(n.count(".") for n in heads)
        return [n for n in heads if n.count(".") == depth]
    stages = [(n, s) for n, s in once if len(s) >= 3]
    # The shallowest level with a few feature stages: deeper, a wrapped module can sit inside a
    # residual branch, and the skip connection then carries the gradient around the break.
    for depth in range(4):
        level = [n for n, _ in stages if n.count(".") == depth]
        if len(level) >= 3:
            return [level[len(level) // 2]]
    return [stages[len(stages) // 2][0]]
