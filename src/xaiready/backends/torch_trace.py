"""Find where a PyTorch gradient path dies, by watching one forward pass op by op.

A ``TorchFunctionMode`` sees every tensor operation (including ``Tensor.detach``, ``.item()``,
``.numpy()``, ``torch.tensor(data)``) while module hooks keep a stack of the modules running. An op
whose inputs depend on the model input and carry gradient, but whose result does not, *cuts* the
path; we taint its result and follow the taint, so the cut reported is the one that actually reaches
the explained output, not a harmless ``.item()`` used for logging.
"""

from __future__ import annotations

import re

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
        self.live: set[int] = {id(x)}  # ... and still have an autograd path to it
        self.known = known | {id(x)}
        self.escapes: list[int] = []  # events whose value left torch (item/numpy)
        self.keep: list[object] = [x]  # hold references so ids stay unique during the trace

    # module stack, driven by hooks
    def push(self, name):
        self.stack.append(name)

    def pop(self, name, output):
        if self.stack and self.stack[-1] == name:
            self.stack.pop()
        tensors = [t for t in tree_flatten(output)[0] if isinstance(t, torch.Tensor)]
        self._adopt_new_leaves(tensors)  # a module may return a tensor built by an untraced factory
        for t in tensors:
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
        for a in dep:  # a custom autograd.Function re-attaches what its forward computed without grad
            if a is not None and id(a) in self.cut and isinstance(a.grad_fn, torch.autograd.function.BackwardCFunction):
                del self.cut[id(a)]
                self.live.add(id(a))
        # Parameters make a tensor require grad, so "has a gradient path to the input" is tracked apart.
        live_in = any(a is not None and id(a) in self.live for a in dep)
        tainted = [self.cut[id(a)] for a in dep if a is not None and id(a) in self.cut and id(a) not in self.live]

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
            if live_in and t.requires_grad:
                self.live.add(id(t))
            elif event is not None:
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
        live = [a for a in dep if a is not None and id(a) in self.live]
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
            if id(t) in self.live:
                self.zero[id(t)] = event


def locate_break(backend, x: np.ndarray, target: Target) -> BreakFinding | None:
    """Run one traced forward; return the cut that reaches the score, or None if none does."""
    if backend.kind == "torchscript":
        return BreakFinding(location=ROOT, cause="unknown", op="",
                            detail="TorchScript runs as a compiled graph; its operations cannot be traced")
    tracer, out, root = _traced_forward(backend, x, target)
    if isinstance(out, BaseException):
        return _raised_in_grad_mode(tracer, out)
    # Only the model's forward (and a custom target's score) is traced: xaiready's own handling of the
    # output (seeds, NumPy copies) must never be blamed.
    live = id(root) in tracer.live or isinstance(root.grad_fn, torch.autograd.function.BackwardCFunction)
    event_index = tracer.zero.get(id(root)) if live else tracer.cut.get(id(root), tracer.cut.get(id(out)))
    if event_index is not None:
        return _finding(tracer.events[event_index])
    # The taint did not reach the score: ops inside a custom autograd.Function's forward run without
    # grad and look like cuts, so a custom backward is the better lead; then weights that are all zero.
    return locate_custom_backward(backend, x, target) or (_zero_weights(backend.module) if live else None)


def locate_incorrect(backend, x: np.ndarray, target: Target) -> BreakFinding | None:
    """Why autograd disagrees with finite differences: a custom backward, or a value that left the graph
    (``.item()``, ``.detach()``, NumPy) and came back as a constant whose dependence on the input
    autograd cannot see."""
    found = locate_custom_backward(backend, x, target)
    if found is not None or backend.kind == "torchscript":
        return found
    tracer, out, _root = _traced_forward(backend, x, target)
    if isinstance(out, BaseException):
        return None
    escapes = [e for e in tracer.events if e.cause in ("item", "detach", "numpy")]
    if not escapes:
        return None
    event = escapes[0]
    finding = _finding(event)
    finding.detail = (f"{finding.op} {_where(event)}: the value leaves the autograd graph and re-enters as a "
                      "constant, so the gradient ignores how it depends on the input (e.g. a scale taken "
                      "through .item()); compute it with tensor ops, or detach it on purpose and accept an "
                      "approximate gradient")
    return finding


def _traced_forward(backend, x: np.ndarray, target: Target):
    """One forward under the tracer: (tracer, output or the exception it raised, score root)."""
    module = backend.module
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
            try:
                out = backend.target_output(backend._call(xt), target)
            except (RuntimeError, ValueError, TypeError, IndexError) as exc:
                return tracer, exc, None
            root = target.framework_fn(out) if target.framework_fn is not None else out
    finally:
        for h in handles:
            h.remove()
        handles.clear()
    return tracer, out, root


def _raised_in_grad_mode(tracer: _Tracer, exc: BaseException) -> BreakFinding:
    """The forward raised with gradients enabled (it runs without them): the module on top of the
    stack is the one whose forward raised."""
    message = " ".join(str(exc).split()) or type(exc).__name__
    cause = "numpy" if "numpy" in message.lower() else "unknown"
    location = tracer._module()
    where = f"in '{location}'" if location != ROOT else "in the top-level forward"
    return BreakFinding(location=location, cause=cause, op="numpy" if cause == "numpy" else type(exc).__name__,
                        after=None, detail=f"the forward {where} raises when gradients are enabled "
                                           f"(it runs without them): {type(exc).__name__}: {message}")


def _zero_weights(module) -> BreakFinding | None:
    """The last layer whose weight is entirely zero (a zero-initialised head, say): it passes no gradient."""
    found = None
    for name, sub in module.named_modules():
        w = getattr(sub, "weight", None)
        if name and isinstance(w, torch.Tensor) and w.is_floating_point() and w.numel() and not bool(w.any()):
            found = (name, sub, w)
    if found is None:
        return None
    name, sub, w = found
    return BreakFinding(location=name, cause="zero-weights", op=type(sub).__name__,
                        detail=f"all {w.numel()} weights of '{name}' ({type(sub).__name__}) are zero, so no "
                               "gradient passes it (a zero-initialised layer, e.g. a classification head "
                               "before training); load trained weights")


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
            out = backend.target_output(backend._call(xt), target)
    finally:
        for h in handles:
            h.remove()
    root = _score_root(backend, out, target)
    if root is None or root.grad_fn is None:
        return None
    for node in _walk(root.grad_fn):
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


def _where(event: _Event) -> str:
    where = f"in '{event.module}'" if event.module != ROOT else "in the top-level forward"
    after = f", right after '{event.after}'" if event.after and event.after != event.module else ""
    return where + after


def _finding(event: _Event) -> BreakFinding:
    op = {"__get__": ".data"}.get(event.op, event.op)
    why = {
        "detach": "the tensor is detached from the graph",
        "numpy": "the tensor goes through NumPy and comes back as a new tensor without history",
        "no_grad": "the op runs under torch.no_grad()/inference_mode inside forward",
        "item": "the value leaves torch as a Python number",
        "non-differentiable": "the op has no useful gradient (comparison, argmax, rounding or integer cast)",
        "unknown": "the result no longer requires grad",
    }[event.cause]
    return BreakFinding(location=event.module, cause=event.cause, op=op, after=event.after,
                        detail=f"{op} {_where(event)}: {why}")


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
            out = backend.target_output(backend._call(xt), target)
    finally:
        for h in handles:
            h.remove()
    root = _score_root(backend, out, target)
    if root is None:
        return None
    tensors = [t for _, ins, outs in records for t in ins + outs]
    grads = torch.autograd.grad(root, tensors, allow_unused=True, retain_graph=True) if tensors else []
    finite = [g is None or bool(torch.isfinite(g).all()) for g in grads]
    i, found = 0, []
    for name, ins, outs in records:
        in_ok, out_ok = finite[i:i + len(ins)], finite[i + len(ins):i + len(ins) + len(outs)]
        i += len(ins) + len(outs)
        if all(out_ok) and not all(in_ok):
            found.append(name)
    op = _first_non_finite_op(root, xt)
    if not found and op is None:
        return None
    name = max(found, key=lambda n: n.count(".")) if found else ROOT
    where = f"'{name}'" if name != ROOT else "the top-level forward"
    if op is None:
        return BreakFinding(location=name, cause="unknown", op="backward",
                            detail=f"the backward of {where} turns a finite gradient into NaN/inf")
    if not _BUILTIN_NODE.search(op):  # a custom autograd.Function's backward produced it
        return BreakFinding(location=name, cause="custom-backward", op=op.removesuffix("Backward"),
                            detail=f"the custom backward '{op}' in {where} returns NaN/inf")
    forward_op = _BUILTIN_NODE.sub("", op).lower()
    return BreakFinding(location=name, cause="non-differentiable", op=forward_op,
                        detail=f"{forward_op} in {where} is evaluated where it has no derivative (e.g. sqrt "
                               "or norm at exactly 0, log at 0, division by zero), so its backward returns "
                               "NaN/inf; add a small epsilon inside it")


_BUILTIN_NODE = re.compile(r"Backward\d+$")


def _first_non_finite_op(root: torch.Tensor, xt: torch.Tensor) -> str | None:
    """The autograd node whose backward first turns finite gradients into NaN/inf (sqrt at 0 gives inf,
    which the next multiplication by 0 turns into NaN: the first node is the one to name)."""
    if root.grad_fn is None:
        return None
    found: list[str] = []

    def finite(ts):
        return all(t is None or bool(torch.isfinite(t).all()) for t in ts)

    def hook(node):
        def fn(grad_inputs, grad_outputs):
            if not found and finite(grad_outputs) and not finite(grad_inputs):
                found.append(type(node).__name__)
        return fn

    handles = [node.register_hook(hook(node)) for node in _walk(root.grad_fn)]
    try:
        torch.autograd.grad(root, xt, allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    return found[0] if found else None


def _score_root(backend, out, target):
    if target.framework_fn is not None:
        score = target.framework_fn(out)
        return score.sum() if score.requires_grad else None
    if not out.requires_grad:
        return None
    seed = torch.as_tensor(target.seed(backend.to_numpy(out)), dtype=out.dtype, device=out.device)
    return (out * seed).sum()
