"""Find where a PyTorch gradient path dies, by watching one forward pass op by op.

A ``TorchFunctionMode`` sees every tensor operation (including ``Tensor.detach``, ``.item()``,
``.numpy()``, ``torch.tensor(data)``) while module hooks keep a stack of the modules running. An op
whose inputs depend on the model input and carry gradient, but whose result does not, *cuts* the
path; we taint its result and follow the taint, so the cut reported is the one that actually reaches
the explained output, not a harmless ``.item()`` used for logging.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from ..targets import Target
from .base import BreakFinding

# __get__ is the `.data` property; torch.tensor(t) / t.new_tensor(t) copy the values without history.
_DETACH = {"detach", "detach_", "__get__", "tensor", "new_tensor"}
_ESCAPE_ITEM = {"item", "tolist", "__float__", "__int__", "__bool__", "__index__"}
_ESCAPE_NUMPY = {"numpy", "__array__"}
_FACTORIES = {"tensor", "as_tensor", "from_numpy", "asarray"}
_ZERO_GRAD = {"round", "round_", "floor", "floor_", "ceil", "ceil_", "sign", "sign_", "trunc", "trunc_",
              "heaviside"}
ROOT = "(root)"


class _Event:
    def __init__(self, cause, op, module, after):
        self.cause, self.op, self.module, self.after = cause, op, module, after


class _Tracer(TorchFunctionMode):
    def __init__(self, x: torch.Tensor, known: set[int]):
        super().__init__()
        self.stack: list[str] = []
        self.events: list[_Event] = []
        self.cut: dict[int, int] = {}  # id(tensor) -> event index, for tensors cut from the input
        self.zero: dict[int, int] = {}  # id(tensor) -> event index, for tensors with zero gradient
        self.origin: dict[int, str] = {id(x): "input"}  # id(tensor) -> last module that produced it
        self.depends: set[int] = {id(x)}  # tensors that depend on the model input
        self.known = known | {id(x)}
        self.escapes: list[int] = []  # events whose value left torch (item/numpy)
        self.keep: list[object] = [x]  # hold references so ids stay unique during the trace

    # module stack, driven by hooks
    def push(self, name):
        self.stack.append(name)

    def pop(self, name, output):
        if self.stack and self.stack[-1] == name:
            self.stack.pop()
        for t in tree_flatten(output)[0]:
            if isinstance(t, torch.Tensor):
                self.origin[id(t)] = name
                self.known.add(id(t))
                self.keep.append(t)

    def _module(self):
        return self.stack[-1] if self.stack else ROOT

    def _event(self, cause, op, args_t):
        after = next((self.origin.get(id(a)) for a in args_t if id(a) in self.origin), None)
        self.events.append(_Event(cause, op, self._module(), after))
        return len(self.events) - 1

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        args_t = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
        self._adopt_new_leaves(args_t)
        result = func(*args, **kwargs)
        dep = [a for a in args_t if id(a) in self.depends]
        if name in _FACTORIES and not args_t and self.escapes:
            dep = [None]  # a tensor rebuilt from data that left torch earlier
        if not dep:
            return result
        outs = [t for t in tree_flatten(result)[0] if isinstance(t, torch.Tensor)]
        live_in = any(a is not None and a.requires_grad for a in dep)
        tainted = [self.cut[id(a)] for a in dep if a is not None and id(a) in self.cut and not a.requires_grad]

        if not outs:  # the value left torch: .item(), .tolist(), .numpy()
            cause = "numpy" if name in _ESCAPE_NUMPY else "item" if name in _ESCAPE_ITEM else None
            if cause and live_in:
                self.escapes.append(self._event(cause, name, dep))
            elif cause and tainted:
                self.events[tainted[0]].cause = cause if cause == "numpy" else self.events[tainted[0]].cause
                self.escapes.append(tainted[0])
            return result

        event = None
        if dep == [None]:
            event = self.escapes[-1]
            if self.events[event].cause == "detach":
                self.events[event].cause = "numpy"
        elif tainted:
            event = tainted[0]
        elif live_in and not any(t.requires_grad for t in outs):
            if not torch.is_grad_enabled() or torch.is_inference_mode_enabled():
                cause = "no_grad"
            elif name in _DETACH:
                cause = "detach"
            elif not any(t.is_floating_point() or t.is_complex() for t in outs):
                cause = "non-differentiable"
            else:
                cause = "unknown"
            event = self._event(cause, name, dep)
        for t in outs:
            self.depends.add(id(t))
            self.known.add(id(t))
            self.keep.append(t)
            origin = next((self.origin[id(a)] for a in dep if a is not None and id(a) in self.origin), None)
            if self.stack:
                origin = self.stack[-1]
            if origin:
                self.origin[id(t)] = origin
            if event is not None and not t.requires_grad:
                self.cut[id(t)] = event
        self._track_zero(name, dep, outs)
        return result

    def _adopt_new_leaves(self, args_t):
        """Tensors never seen before (e.g. ``torch.from_numpy``) are rebuilt from escaped data."""
        if not self.escapes:
            return
        for a in args_t:
            if id(a) not in self.known and not a.requires_grad:
                self.known.add(id(a))
                self.depends.add(id(a))
                self.keep.append(a)
                event = self.escapes[-1]
                if self.events[event].cause == "detach":
                    self.events[event].cause = "numpy"
                self.cut[id(a)] = event

    def _track_zero(self, name, dep, outs):
        live = [a for a in dep if a is not None and a.requires_grad]
        if not live:
            return
        if name in _ZERO_GRAD:
            event = self._event("non-differentiable", name, live)
        else:
            zeros = [self.zero[id(a)] for a in live if id(a) in self.zero]
            if not zeros or len(zeros) != len(live):
                return
            event = zeros[0]
        for t in outs:
            if t.requires_grad:
                self.zero[id(t)] = event


def locate_break(backend, x: np.ndarray, target: Target) -> BreakFinding | None:
    """Run one traced forward; return the cut that reaches the score, or None if none does."""
    module = backend.module
    if backend.kind == "torchscript":
        return BreakFinding(location=ROOT, cause="unknown", op="",
                            detail="TorchScript runs as a compiled graph; its operations cannot be traced")
    known = {id(p) for p in module.parameters()} | {id(b) for b in module.buffers()}
    xt = backend.to_tensor(x, requires_grad=True)
    tracer = _Tracer(xt, known)
    handles = []
    try:
        for name, sub in module.named_modules():
            if not name:
                continue
            handles.append(sub.register_forward_pre_hook(lambda _m, _i, n=name: tracer.push(n)))
            handles.append(sub.register_forward_hook(lambda _m, _i, o, n=name: tracer.pop(n, o)))
        with torch.enable_grad(), tracer:
            out = backend._select(module(xt))
            root = target.framework_fn(out) if target.framework_fn is not None else out
            if root.requires_grad and target.framework_fn is None:
                seed = torch.as_tensor(target.seed(backend.to_numpy(out)), dtype=out.dtype)
                root = (out * seed).sum()
    finally:
        for h in handles:
            h.remove()
        handles.clear()
    event_index = tracer.cut.get(id(root)) if not root.requires_grad else tracer.zero.get(id(root))
    if event_index is None and not root.requires_grad:
        event_index = tracer.cut.get(id(out))
    if event_index is None:
        # The taint did not reach the score: ops inside a custom autograd.Function's forward run
        # without grad and look like cuts, so a custom backward is the better lead; else the first cut.
        custom = locate_custom_backward(backend, x, target)
        if custom is not None or not tracer.events:
            return custom
        event_index = 0
    return _finding(tracer.events[event_index])


def locate_custom_backward(backend, x: np.ndarray, target: Target) -> BreakFinding | None:
    """Name the module holding a custom autograd.Function on the score's path, if any."""
    if backend.kind == "torchscript":
        return None
    module = backend.module
    owner: dict[int, str] = {}
    handles = []

    def remember(name, output):
        for t in tree_flatten(output)[0]:
            fn = getattr(t, "grad_fn", None)
            if isinstance(t, torch.Tensor) and fn is not None:
                for node in _walk(fn, stop=owner):
                    owner.setdefault(id(node), name)

    try:
        for name, sub in module.named_modules():
            if name:
                handles.append(sub.register_forward_hook(lambda _m, _i, o, n=name: remember(n, o)))
        with torch.enable_grad():
            xt = backend.to_tensor(x, requires_grad=True)
            out = backend._select(module(xt))
    finally:
        for h in handles:
            h.remove()
    if out.grad_fn is None:
        return None
    for node in _walk(out.grad_fn):
        if isinstance(node, torch.autograd.function.BackwardCFunction):
            fn_name = type(node).__name__.removesuffix("Backward")
            location = owner.get(id(node), ROOT)
            return BreakFinding(location=location, cause="custom-backward", op=fn_name,
                                detail=f"custom autograd.Function '{fn_name}' in '{location}' defines its own "
                                       "backward, which does not match its forward")
    return None


def _walk(fn, stop=None):
    """Autograd nodes reachable from ``fn``, each once (``stop``: ids already attributed)."""
    seen, todo = set(), [fn]
    while todo:
        node = todo.pop()
        if node is None or id(node) in seen or (stop is not None and id(node) in stop):
            continue
        seen.add(id(node))
        yield node
        todo.extend(n for n, _ in getattr(node, "next_functions", ()))


def _finding(event: _Event) -> BreakFinding:
    op = {"__get__": ".data"}.get(event.op, event.op)
    where = f"in '{event.module}'" if event.module != ROOT else "in the top-level forward"
    after = f", right after '{event.after}'" if event.after and event.after != event.module else ""
    why = {
        "detach": "the tensor is detached from the graph",
        "numpy": "the tensor goes through NumPy and comes back as a new tensor without history",
        "no_grad": "the op runs under torch.no_grad()/inference_mode inside forward",
        "item": "the value leaves torch as a Python number",
        "non-differentiable": "the op has no useful gradient (comparison, argmax, rounding or integer cast)",
        "unknown": "the result no longer requires grad",
    }[event.cause]
    return BreakFinding(location=event.module, cause=event.cause, op=op, after=event.after,
                        detail=f"{op} {where}{after}: {why}")


def locate_non_finite(backend, x: np.ndarray, target: Target) -> BreakFinding | None:
    """The innermost module whose output gradient is finite but whose input gradient is not."""
    module = backend.module
    records: list[tuple[str, list[torch.Tensor], list[torch.Tensor]]] = []
    handles = []

    def record(name, inputs, output):
        ins = [t for t in tree_flatten(inputs)[0] if isinstance(t, torch.Tensor) and t.requires_grad]
        outs = [t for t in tree_flatten(output)[0] if isinstance(t, torch.Tensor) and t.requires_grad]
        if ins and outs:
            records.append((name, ins, outs))

    try:
        for name, sub in module.named_modules():
            if name:
                handles.append(sub.register_forward_hook(lambda _m, i, o, n=name: record(n, i, o)))
        with torch.enable_grad():
            xt = backend.to_tensor(x, requires_grad=True)
            out = backend._select(module(xt))
    finally:
        for h in handles:
            h.remove()
    root = _score_root(backend, out, target)
    if root is None or not records:
        return None
    tensors = [t for _, ins, outs in records for t in ins + outs]
    grads = torch.autograd.grad(root, tensors, allow_unused=True)
    finite = [g is None or bool(torch.isfinite(g).all()) for g in grads]
    i, found = 0, []
    for name, ins, outs in records:
        in_ok, out_ok = finite[i:i + len(ins)], finite[i + len(ins):i + len(ins) + len(outs)]
        i += len(ins) + len(outs)
        if all(out_ok) and not all(in_ok):
            found.append(name)
    if not found:
        return None
    name = max(found, key=lambda n: n.count("."))
    return BreakFinding(location=name, cause="unknown", op="backward",
                        detail=f"the backward of '{name}' turns a finite gradient into NaN/inf "
                               "(e.g. sqrt or log at 0, division by zero)")


def _score_root(backend, out, target):
    if target.framework_fn is not None:
        score = target.framework_fn(out)
        return score.sum() if score.requires_grad else None
    if not out.requires_grad:
        return None
    seed = torch.as_tensor(target.seed(backend.to_numpy(out)), dtype=out.dtype, device=out.device)
    return (out * seed).sum()
