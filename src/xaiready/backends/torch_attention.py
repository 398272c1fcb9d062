"""Attention probabilities of a PyTorch forward, found by measurement, with their gradients.

No module is recognised by its name or class. The forward runs under a ``TorchFunctionMode`` that
looks at every torch call:

* ``F.scaled_dot_product_attention`` (timm ViT/DeiT, Hugging Face ``sdpa``) never materialises its
  probabilities, so a self-attention call (query and key of the same length, one row per sample) is
  recomputed explicitly as ``softmax(q k^T * scale + mask) @ v`` and the probability tensor is kept;
* ``F.multi_head_attention_forward`` (``nn.MultiheadAttention``, torchvision's ViT) runs its body
  outside the mode, so it is called with ``need_weights=True, average_attn_weights=False``: that is
  its explicit-softmax path, whose per-head weights view the probability tensor the output is built
  from. The caller gets back what it asked for. (Its ``torch._native_multi_head_attention`` fast
  path is never taken here: it is refused while a torch-function mode is active, and with gradients
  enabled.)
* any ``softmax`` whose result is (B, heads, N, N), non-negative, with rows summing to 1 (Hugging
  Face ``eager``, timm without fused attention, older hand-written attention) is kept; the model
  goes on with a copy, so a later in-place op cannot rewrite what was captured.

Forward pre/post hooks keep a stack of running modules so that each tensor is reported with the
module it was computed in ("scaled_dot_product_attention #3 in blocks.2.attn"). Gradients of the
target's summed score are taken with ``torch.autograd.grad`` against the kept tensors, so no
parameter's ``.grad`` is touched; hooks and the mode are gone on exit, also after an exception.
"""

from __future__ import annotations

import inspect
import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..errors import CapabilityError
from ..targets import Target

_SOFTMAX_NAMES = {"softmax", "_softmax"}
_SDPA_PARAMS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
_MHA_SIGNATURE = inspect.signature(F.multi_head_attention_forward)


@dataclass
class AttentionResult:
    """Every self-attention probability tensor of one forward, in forward order, with its gradient."""

    probs: list[np.ndarray]  # each (B, heads, N, N)
    grads: list[np.ndarray]  # d(sum of the target's scores)/d(probs), same shapes
    output: np.ndarray
    scores: np.ndarray
    target: Target  # resolved on this (unperturbed) output
    sites: list[str]  # where each was found: "<call> #<k> in <module>"
    notes: list[str] = field(default_factory=list)


@dataclass
class _Found:
    tensor: torch.Tensor  # the tensor in the graph the gradient is taken against
    shape: tuple[int, int, int, int]  # (B, heads, N, N) that tensor is read as
    site: str


# ---- module stack ------------------------------------------------------------------------------------
class _ModuleStack:
    def __init__(self):
        self.names: list[str] = []

    @property
    def current(self) -> str:
        return self.names[-1] if self.names else "the model"


@contextmanager
def _module_stack(module: torch.nn.Module):
    stack = _ModuleStack()
    handles = []

    def push(name):
        def _pre(_module, _inputs):
            stack.names.append(name or "the model")
        return _pre

    def pop(_module, _inputs, _output):
        if stack.names:
            stack.names.pop()

    try:
        for name, m in module.named_modules():
            try:
                handles.append(m.register_forward_pre_hook(push(name)))
                handles.append(m.register_forward_hook(pop, always_call=True))
            except RuntimeError:  # TorchScript refuses Python hooks; sites then name the whole model
                break
        yield stack
    finally:
        for h in handles:
            h.remove()


# ---- explicit attention --------------------------------------------------------------------------------
def _explicit_sdpa(query, key, value, attn_mask=None, is_causal=False, scale=None, enable_gqa=False):
    """softmax(q k^T * scale + mask) @ v as torch's documented reference computes it; returns the output
    and the probabilities. Half-precision inputs are computed in float32 (as the fused kernels
    accumulate) and the output cast back."""
    out_dtype = query.dtype
    if query.dtype in (torch.float16, torch.bfloat16):
        query, key, value = query.float(), key.float(), value.float()
    n_q, n_k = query.size(-2), key.size(-2)
    scale = 1.0 / math.sqrt(query.size(-1)) if scale is None else scale
    if enable_gqa:
        groups = query.size(-3) // key.size(-3)
        key = key.repeat_interleave(groups, -3)
        value = value.repeat_interleave(groups, -3)
    scores = (query @ key.transpose(-2, -1)) * scale
    if is_causal:
        if attn_mask is not None:
            raise CapabilityError("scaled_dot_product_attention was called with both attn_mask and is_causal, "
                                  "which torch itself rejects", hint="pass one of them")
        keep = torch.ones(n_q, n_k, dtype=torch.bool, device=query.device).tril(diagonal=0)
        scores = scores.masked_fill(~keep, float("-inf"))
    elif attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask.to(scores.dtype)
    probs = torch.softmax(scores, dim=-1)
    return (probs @ value).to(out_dtype), probs


class _AttentionCapture(TorchFunctionMode):
    """Keeps every self-attention probability tensor of the forward (see the module docstring)."""

    def __init__(self, batch: int, stack: _ModuleStack):
        super().__init__()
        self.batch, self.stack = batch, stack
        self.found: list[_Found] = []
        self.notes: list[str] = []
        self._counts: dict[str, int] = {}

    def _keep(self, kind: str, tensor: torch.Tensor, shape) -> None:
        self._counts[kind] = self._counts.get(kind, 0) + 1
        self.found.append(_Found(tensor, tuple(int(s) for s in shape),
                                 f"{kind} #{self._counts[kind]} in {self.stack.current}"))

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name == "scaled_dot_product_attention":
            return self._sdpa(func, args, kwargs)
        if func is F.multi_head_attention_forward:
            return self._mha(func, args, kwargs)
        out = func(*args, **kwargs)
        if name in _SOFTMAX_NAMES and isinstance(out, torch.Tensor) and self._is_probs(out):
            self._keep("softmax", out, out.shape)
            return out.clone()  # the model goes on with a copy: in-place ops cannot rewrite the kept one
        return out

    def _is_probs(self, t: torch.Tensor) -> bool:
        if t.dim() != 4 or t.shape[0] != self.batch or t.shape[-1] != t.shape[-2] or t.shape[-1] < 2:
            return False
        if not t.is_floating_point() or t.is_nested:
            return False
        with torch.no_grad():
            tol = 1e-2 if t.dtype in (torch.float16, torch.bfloat16) else 1e-4
            rows = t.sum(-1, dtype=torch.float32)
            return bool(((rows - 1).abs() <= tol).all() and (t >= 0).all())

    def _sdpa(self, func, args, kwargs):
        given = dict(zip(_SDPA_PARAMS, args, strict=False))
        unknown = sorted(set(kwargs) - set(_SDPA_PARAMS))
        clash = sorted(set(kwargs) & set(given))
        if len(args) > len(_SDPA_PARAMS) or unknown or clash:
            raise CapabilityError(f"scaled_dot_product_attention was called with arguments xaiready cannot "
                                  f"recompute ({', '.join(unknown or clash) or 'too many positional'})",
                                  hint="attention rollout supports query, key, value, attn_mask, dropout_p, "
                                       "is_causal, scale and enable_gqa")
        given.update(kwargs)
        q, k = given["query"], given["key"]
        if not isinstance(q, torch.Tensor) or q.is_nested or k.is_nested:
            raise CapabilityError("scaled_dot_product_attention was called on nested tensors, which xaiready "
                                  "cannot recompute", hint="run the model on a padded batch")
        self_attention = q.dim() in (3, 4) and q.shape[0] == self.batch and q.size(-2) == k.size(-2)
        if not self_attention:  # cross-attention or pooling queries: not part of a rollout, left as it is
            self._note(f"an attention with query shape {tuple(q.shape)} and key shape {tuple(k.shape)} in "
                       f"{self.stack.current} is not self-attention over the tokens and was left fused")
            return func(*args, **kwargs)
        if float(given.get("dropout_p", 0.0) or 0.0) > 0:
            self._note("scaled_dot_product_attention was called with dropout_p > 0 in eval mode; the recomputed "
                       "attention applies no dropout")
        out, probs = _explicit_sdpa(q, k, given["value"], given.get("attn_mask"), bool(given.get("is_causal", False)),
                                    given.get("scale"), bool(given.get("enable_gqa", False)))
        self._keep("scaled_dot_product_attention", probs, probs.shape if probs.dim() == 4 else
                   (probs.shape[0], 1, *probs.shape[1:]))
        return out

    def _mha(self, func, args, kwargs):
        bound = _MHA_SIGNATURE.bind(*args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        query, key = a["query"], a["key"]
        batched = query.dim() == 3
        if not (batched and query.shape[1] == self.batch and query.shape[0] == key.shape[0]):
            self._note(f"a multi-head attention with query shape {tuple(query.shape)} in {self.stack.current} is "
                       "not batched self-attention over the tokens and was left as it is")
            return func(*args, **kwargs)
        if a["is_causal"] and a["attn_mask"] is None:
            raise CapabilityError("nn.MultiheadAttention was called with is_causal=True and no attn_mask, whose "
                                  "attention weights torch cannot compute", hint="pass the causal mask as attn_mask")
        want, average = a["need_weights"], a["average_attn_weights"]
        a["need_weights"], a["average_attn_weights"] = True, False
        out, weights = func(*bound.args, **bound.kwargs)
        # (B, heads, L, S) is a view of the (B * heads, L, S) softmax output the attention was built from.
        base = weights._base if weights._base is not None else weights
        self._keep("multi_head_attention_forward", base, weights.shape)
        if not want:
            return out, None
        return out, weights.mean(dim=1) if average else weights


# ---- the pass ----------------------------------------------------------------------------------------
def attention_vjp(backend, x: np.ndarray, target: Target) -> AttentionResult:
    """One forward of ``backend`` on ``x`` with every self-attention probability tensor kept, and one
    backward of the target's summed score (seeded as ``TorchBackend.vjp`` seeds it) to those tensors."""
    module = backend.module
    with torch.enable_grad():
        xt = backend.to_tensor(x, requires_grad=True)  # probabilities need a graph even with frozen weights
        with _module_stack(module) as stack:
            capture = _AttentionCapture(int(x.shape[0]), stack)
            with capture:
                out = backend._run(xt)
        out_np = backend.to_numpy(out)
        if not target.resolved:
            target = target.resolve(out_np, channel_axis=1)
        if target.framework_fn is not None:
            score = target.framework_fn(out)
            scores = backend.to_numpy(score).astype(np.float64).reshape(-1)
            root, seed = score.sum(), None
        else:
            scores = np.asarray(target.scores(out_np), dtype=np.float64)
            root = out
            seed = torch.as_tensor(target.seed(out_np), dtype=out.dtype, device=out.device)
        found, notes = capture.found, list(capture.notes)
        if found and not root.requires_grad:
            raise CapabilityError("the explained score does not require grad, so no gradient reaches the attention",
                                  hint="`xaiready check` names where the gradient breaks")
        live = [i for i, f in enumerate(found) if f.tensor.requires_grad]
        grads: list[torch.Tensor | None] = [None] * len(found)
        if live:
            got = torch.autograd.grad(root, [found[i].tensor for i in live], grad_outputs=seed, allow_unused=True)
            for i, g in zip(live, got, strict=True):
                grads[i] = g
        probs_np, grads_np = [], []
        for f, g in zip(found, grads, strict=True):
            p = backend.to_numpy(f.tensor).reshape(f.shape)
            if g is None:
                notes.append(f"{f.site} is not on the gradient path of the score; its gradient is zero")
                g_np = np.zeros_like(p)
            else:
                g_np = backend.to_numpy(g).reshape(f.shape)
            probs_np.append(p)
            grads_np.append(g_np)
    return AttentionResult(probs=probs_np, grads=grads_np, output=out_np, scores=scores, target=target,
                           sites=[f.site for f in found], notes=notes)

