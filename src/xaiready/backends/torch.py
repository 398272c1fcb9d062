"""PyTorch backend: eager modules and TorchScript, behind the protocol in ``base``.

Everything this module does to a model is undone on exit, also after an exception: training flags
are restored, hooks are removed, and gradients are taken with ``torch.autograd.grad`` (never
``.backward()``), so no parameter's ``.grad`` is touched and no input is modified in place.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from functools import cached_property

import numpy as np
import torch
from array_api_compat import torch as torch_xp
from torch.overrides import TorchFunctionMode

from ..errors import DeviceMemoryError, InputError, UsageError, first_line
from ..targets import Target, runner_up
from .arrays import seed_of
from .base import BreakFinding, GradResult, LayerAccess, OverrideStats, grad_result, select_output

# Activations that ReLU-style gradient rules cannot be applied to; counted, never silently ignored.
_NOT_OVERRIDABLE = {"silu", "gelu", "leaky_relu", "leaky_relu_", "elu", "elu_", "selu", "selu_", "celu",
                    "celu_", "hardswish", "hardswish_", "hardsigmoid", "mish", "softplus", "prelu", "relu6",
                    "hardtanh", "hardtanh_", "rrelu", "rrelu_", "glu"}
_RELU_NAMES = {"relu", "relu_"}


class TorchBackend:
    framework = "torch"
    layout = "NCHW"
    supports_contrast = True  # vjp(contrast=True): the runner-up class's gradients from the same forward
    held = None  # a multi-input model's other inputs, fed beside the explained one (``held_inputs``)

    def __init__(self, module: torch.nn.Module, *, output: str | int | None = None,
                 kind: str = "eager"):
        self.module = module
        self.output = output
        self.kind = kind  # "eager" or "torchscript"
        self._eval_depth = 0
        self._saved_flags: list[tuple[torch.nn.Module, bool]] = []
        self.output_choice_note = ""

    # ---- context: eval mode, restored exactly --------------------------------------------------
    @contextmanager
    def session(self):
        """Eval mode for the duration (re-entrant); every module's flag restored on exit."""
        if self._eval_depth == 0:
            # Frozen TorchScript modules have no training flag at all; they are always in eval mode.
            self._saved_flags = [(m, m.training) for m in self.module.modules() if hasattr(m, "training")]
            for m, _ in self._saved_flags:
                m.training = False
        self._eval_depth += 1
        try:
            yield self
        finally:
            self._eval_depth -= 1
            if self._eval_depth == 0:
                for m, flag in self._saved_flags:
                    m.training = flag
                self._saved_flags = []

    # ---- tensors in and out ------------------------------------------------------------------------
    def _param(self) -> torch.Tensor | None:
        for p in self.module.parameters():
            return p
        for b in self.module.buffers():
            return b
        return None

    def to_tensor(self, x: np.ndarray, requires_grad: bool = False) -> torch.Tensor:
        ref = self._param()
        dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
        device = ref.device if ref is not None else torch.device("cpu")
        t = torch.as_tensor(np.ascontiguousarray(x), dtype=dtype, device=device).clone()
        return t.requires_grad_(requires_grad)

    @staticmethod
    def to_numpy(t) -> np.ndarray:
        t = t.detach()
        if t.dtype == torch.bfloat16:  # NumPy has no bfloat16; float32 holds every bfloat16 exactly
            t = t.float()
        return t.cpu().numpy()

    @property
    def precision(self) -> str:
        """The floating dtype the model computes in, by name (``float32``, ``float16``, ``bfloat16``...)."""
        ref = self._param()
        return str(ref.dtype).removeprefix("torch.") if ref is not None and ref.is_floating_point() else "float32"

    @contextmanager
    def full_precision(self, dtype: str = "float32"):
        """Within the block the model computes in ``dtype`` (float32 or float64); every tensor is restored
        exactly on exit (float16, bfloat16 and float32 all convert to float32/float64 without loss).

        Finite differences of a half-precision model are rounding noise, and those of a model whose
        gradient is tiny drown in float32 rounding, so gradient correctness is measured on the same
        weights in a wider type.
        """
        wide = getattr(torch, dtype)
        narrow = {torch.float16, torch.bfloat16, torch.float32} - {wide}
        tensors = [t for t in (*self.module.parameters(), *self.module.buffers()) if t.dtype in narrow]
        saved = [(t, t.dtype) for t in tensors]
        try:
            for t in tensors:
                t.data = t.data.to(wide)
            yield self
        finally:
            for t, old in saved:
                t.data = t.data.to(old)

    def _select(self, raw):
        """Pick the output to explain from a tensor, dict or tuple output."""
        return select_output(raw, self.output, lambda v: isinstance(v, torch.Tensor))

    def target_output(self, raw, target: Target):
        """What ``target`` reads of the model's output ``raw``: all of it for a raw-output target (a
        detector's list[dict]), else the selected tensor."""
        return raw if getattr(target, "raw_output", False) else self._select(raw)

    def _call(self, xt: torch.Tensor):
        """The module on ``xt``, with the held inputs of a multi-input model (``held_inputs``)."""
        return self.module(xt) if self.held is None else self.held.call_torch(self.module, xt)

    @cached_property
    def _internal_output(self) -> str | None:
        """``--output NAME`` naming a submodule (an eager model's logits before its final sigmoid;
        ``name#k`` for its k-th call): that module's output is explained instead of the model's."""
        if not isinstance(self.output, str) or self.kind != "eager":
            return None
        return self.output if _module_and_call(self.output)[0] in dict(self.module.named_modules()) else None

    def _run(self, xt: torch.Tensor, raw: bool = False):
        """The selected output tensor; ``raw=True``: the model's output as it returned it (for raw-output
        targets such as ``detection.Detection``, which read ``list[dict]`` detections)."""
        internal = None if raw else self._internal_output
        try:
            if internal is not None:
                with _capture(self.module, [internal]) as grabbed:
                    out = self._call(xt)
                if (isinstance(out, dict) or hasattr(out, "keys")) and internal in out.keys():
                    return self._select(out)  # an output key that is also a module's name
                inner = grabbed.activations().get(internal)
                if inner is None:
                    raise UsageError(f"--output '{internal}': that module did not run on this input, or returns "
                                     "no float tensor", hint="name a module on the forward path (see check's "
                                     "layer list)")
                return inner
            out = self._call(xt)
            return out if raw else self._select(out)
        except (UsageError, InputError):
            raise
        except torch.OutOfMemoryError as exc:
            raise DeviceMemoryError(f"{self.ops.device} ran out of memory for a batch of {xt.shape[0]}",
                                    hint="pass a smaller --batch-size, or free the device") from exc
        except (RuntimeError, ValueError, TypeError, IndexError, AssertionError) as exc:  # models assert shapes
            first = first_line(exc)
            raise InputError(f"the model could not run on an input of shape {tuple(xt.shape)}: {first}",
                             hint="check --input-shape / --layout, or the input file") from exc

    def output_names(self, x: np.ndarray) -> list[str]:
        with self.session(), torch.no_grad():
            raw = self._call(self.to_tensor(x))
        if isinstance(raw, dict) or hasattr(raw, "keys"):
            return [str(k) for k in raw.keys()]
        if isinstance(raw, (tuple, list)):
            return [str(i) for i in range(len(raw))]
        return []

    # ---- protocol ------------------------------------------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        with self.session(), torch.no_grad():
            return self.to_numpy(self._run(self.to_tensor(x)))

    def vjp(self, x, target: Target, *, layers: Sequence[str] = (),
            input_grad: bool = True, contrast: bool = False) -> GradResult:
        """NumPy in, NumPy out; a tensor ``x`` (``self.ops``) gets tensors back, left on the device."""
        native = isinstance(x, torch.Tensor)
        keep = _detached if native else self.to_numpy
        raw = bool(getattr(target, "raw_output", False))  # the target reads the model's own output
        with self.session(), torch.enable_grad(), _capture(self.module, layers) as captured:
            xt = x.detach().requires_grad_(input_grad) if native else self.to_tensor(x, requires_grad=input_grad)
            try:
                out = self._run(xt, raw=raw)
            except InputError as exc:
                if native:
                    raise
                return self._grad_mode_failure(x, target, exc)
            out_kept = _tree(keep, out) if raw else keep(out)
            if not target.resolved:
                target = target.resolve(_tree(self.to_numpy, out) if raw else self.to_numpy(out), channel_axis=1)
            if raw and target.framework_fn is None and not isinstance(out, torch.Tensor):
                raise UsageError(f"a raw-output target without a framework function needs a tensor output; this "
                                 f"model returns {_kind_of(out)}",
                                 hint="give the target a framework_fn, or use --task detection")
            if target.framework_fn is not None:
                score = target.framework_fn(out)
                scores = (keep(score).to(torch.float64) if native else self.to_numpy(score).astype(np.float64))
                scores = scores.reshape(-1)
                root, seed = score.sum(), None
            else:
                scores = target.scores(out_kept)
                root = out
                seed = target.seed(out_kept)
                seed = seed if native else torch.as_tensor(seed, dtype=out.dtype, device=out.device)
            acts = captured.activations()
            wrt = ([xt] if input_grad else []) + list(acts.values())
            in_graph = bool(root.requires_grad)
            live = [i for i, t in enumerate(wrt) if t.requires_grad] if in_graph else []
            other = runner_up(target, out_kept) if contrast and not native and seed is not None and live else None

            def backward(seed, retain=False):
                grads = [None] * len(wrt)
                if live:
                    found = torch.autograd.grad(root, [wrt[i] for i in live], grad_outputs=seed, allow_unused=True,
                                                retain_graph=retain)
                    for i, g in zip(live, found, strict=True):
                        grads[i] = g
                return grads

            result = grad_result(keep, out_kept, scores, in_graph, captured.calls(), target, acts,
                                 backward(seed, retain=other is not None), input_grad)
            if other is not None:  # the runner-up class from the same forward: one more backward only
                other_seed = torch.as_tensor(other.seed(out_kept), dtype=out.dtype, device=out.device)
                result.contrast = grad_result(keep, out_kept, other.scores(out_kept), in_graph, result.calls,
                                              other, acts, backward(other_seed), input_grad)
            return result

    @property
    def ops(self) -> TorchOps:
        """Tensors on the model's device, for methods' chunk loops (``backends.arrays``)."""
        return TorchOps(self)

    def _grad_mode_failure(self, x: np.ndarray, target: Target, exc: InputError) -> GradResult:
        """A forward that runs without gradients but raises with them (``.numpy()`` on a tensor that
        requires grad, say) is a broken gradient path, not an input problem; anything else re-raises."""
        raw = bool(getattr(target, "raw_output", False))
        try:
            if raw:
                with self.session(), torch.no_grad():
                    out_np = _tree(self.to_numpy, self._run(self.to_tensor(x), raw=True))
            else:
                out_np = self.forward(x)
        except InputError:
            raise exc from None
        if not target.resolved:
            target = target.resolve(out_np, channel_axis=1)
        scores = None if target.framework_fn is not None else target.scores(out_np)
        return GradResult(output=out_np, scores=scores, input_grad=None, score_in_graph=False, target=target,
                          grad_mode_error=first_line(exc.__cause__ or exc))

    def attention(self, x: np.ndarray, target: Target):
        """Every attention-probability tensor of one forward, with its gradient of the target's score
        (``torch_attention``); for attention-aware methods such as gradient-weighted rollout."""
        from . import torch_attention

        with self.session():
            return torch_attention.attention_vjp(self, x, target)

    def observe(self, x: np.ndarray, layers: Sequence[str]) -> dict[str, np.ndarray]:
        """The named layers' outputs on one forward without gradients (for layout measurement)."""
        with self.session(), torch.no_grad(), _capture(self.module, layers) as captured:
            self._run(self.to_tensor(x))
            return {n: self.to_numpy(a) for n, a in captured.activations().items()}

    @contextmanager
    def detaches_held(self, x: np.ndarray):
        """Within the block every forward replays the tensors the model detached on a forward of ``x``,
        in call order, in place of its own: the function autograd differentiates, in which detached
        tensors are constants. Yields the detach sites (the module entered last before each detach).
        Detectors detach on purpose (torchvision's RPN proposals), so finite differences of the model
        itself cannot match its gradient; replayed, they can. Forwards must have ``x``'s batch size."""
        replay = _DetachReplay()
        hooks = [self.module.register_forward_pre_hook(lambda *_: replay.start())]
        hooks += [m.register_forward_pre_hook(lambda *_, n=n: setattr(replay, "module", n))
                  for n, m in self.module.named_modules() if n]
        try:
            with self.session(), torch.no_grad(), replay:
                self._run(self.to_tensor(x), raw=True)
            replay.replaying = True
            with replay:
                yield list(dict.fromkeys(replay.sites))
        finally:
            for h in hooks:
                h.remove()

    def logits_source(self, x: np.ndarray) -> tuple[str, str] | None:
        """(module, activation) when the output is a final Sigmoid/Softmax module's: ``--output module``
        explains the logits (``logits_module``)."""
        return None if self.kind != "eager" or self._internal_output else logits_module(self, x)

    def layer_kinds(self) -> dict[str, str]:
        """Each layer's class name (LayerNorm, Conv2d...), to tell a normalisation from a projection."""
        return {n: type(m).__name__ for n, m in self.module.named_modules() if n}

    def layers(self) -> LayerAccess:
        names = [n for n, _ in self.module.named_modules() if n]
        if self.kind == "torchscript":
            return LayerAccess([], _torchscript_hook_reason(self.module, names))
        if not names:
            return LayerAccess([], "the model has no submodules to hook")
        return LayerAccess(names)

    @contextmanager
    def relu_override(self, mode: str):
        if mode not in ("guided", "deconvnet"):
            raise UsageError(f"unknown ReLU override '{mode}'", hint="use guided or deconvnet")
        stats = OverrideStats(mode=mode)
        if self.kind == "torchscript":
            stats.note = ("TorchScript runs its forward as a compiled graph, so no ReLU call can be "
                          "intercepted; gradients stay plain")
        with _ReluOverride(mode, stats):
            yield stats

    def locate_break(self, x: np.ndarray, target: Target, status: str) -> BreakFinding | None:
        from . import torch_trace

        locate = {"missing": torch_trace.locate_break, "zero": torch_trace.locate_break,
                  "non-finite": torch_trace.locate_non_finite,
                  "incorrect": torch_trace.locate_incorrect}[status]
        with self.session():
            return locate(self, x, target)

    def to_device(self, spec: str) -> str:
        """Move the model to ``spec`` (``devices``); returns the device it is on."""
        from ..devices import gpu_index

        index = gpu_index(spec, "PyTorch", torch.cuda.device_count() if torch.cuda.is_available() else 0)
        device = torch.device("cpu" if index is None else f"cuda:{index}")
        self.module.to(device)
        return str(device)

    def activation_bytes(self, x: np.ndarray) -> int:
        """Bytes a forward keeps for its backward per row of ``x``'s shape, measured: what autograd saves
        on a pass of two batches minus a pass of one (the weights it saves cancel out). A batch is one
        row, or the graph's fixed batch size for a converted export that has one."""
        unit = getattr(self, "fixed_batch", None) or 1

        def saved(rows: int) -> int:
            total = 0

            def pack(t):
                nonlocal total
                total += t.numel() * t.element_size()
                return t

            with self.session(), torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                self._run(self.to_tensor(np.repeat(x[:1], rows, axis=0), requires_grad=True), raw=True)
            return total

        return max(0, saved(2 * unit) - saved(unit)) // unit

    def free_memory(self) -> int:
        """Free bytes where the model runs: the GPU's (CUDA), else the host's available memory."""
        device = self.ops.device
        if device.type == "cuda":
            return int(torch.cuda.mem_get_info(device)[0])
        from ..limits import available_memory

        return available_memory()

    @property
    def on_accelerator(self) -> bool:
        """True when the model runs on a GPU: explainers may then use larger chunks of rows."""
        ref = self._param()
        return ref is not None and ref.device.type != "cpu"

    def example_shape(self) -> tuple[int, ...] | None:
        for m in self.module.modules():
            if isinstance(m, torch.nn.Conv2d):
                return (1, m.in_channels, 224, 224)
            if isinstance(m, torch.nn.Conv1d):
                return (1, m.in_channels, 256)
            if isinstance(m, torch.nn.Linear):
                return (1, m.in_features)
        return None

    def state_snapshot(self) -> dict:
        """What the non-mutation promise covers, for tests and the report's own self-check."""
        return {
            "training": [getattr(m, "training", None) for m in self.module.modules()],
            "requires_grad": [p.requires_grad for p in self.module.parameters()],
            "grads": [None if p.grad is None else id(p.grad) for p in self.module.parameters()],
            "hooks": sum(len(getattr(m, a, {})) for m in self.module.modules()
                         for a in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
                                   "_backward_pre_hooks")),
        }

    # ---- optional protocol: layer randomization (metrics.randomization, health checks) -------------------
    def randomizable_layers(self) -> list[str]:
        """Modules that own parameters, in definition order."""
        return [n for n, m in self.module.named_modules() if n and next(m.parameters(recurse=False), None) is not None]

    @contextmanager
    def randomized(self, layers: Sequence[str], seed: int = 0):
        """Within the block the named layers hold seeded random weights; originals are restored exactly.

        Weights are drawn U(-b, b) with b = 1/sqrt(fan-in) (torch's default layer init); 1-D parameters
        of a layer without a matrix weight (e.g. norm scales) are drawn N(0, 1).
        """
        modules = dict(self.module.named_modules())
        missing = [n for n in layers if n not in modules]
        if missing:
            raise UsageError(f"the model has no layer '{missing[0]}'", hint="see randomizable_layers()")
        params = [(m, p) for n in layers for m in [modules[n]] for p in m.parameters(recurse=False)]
        saved = [p.detach().clone() for _, p in params]
        gen = torch.Generator().manual_seed(int(seed))
        try:
            with torch.no_grad():
                for m, p in params:
                    w = getattr(m, "weight", None)
                    fan_in = w[0].numel() if isinstance(w, torch.Tensor) and w.dim() >= 2 else p[0].numel() if p.dim() >= 2 else 0
                    if fan_in:
                        b = fan_in ** -0.5
                        new = torch.empty(p.shape, dtype=torch.float32).uniform_(-b, b, generator=gen)
                    else:
                        new = torch.randn(p.shape, generator=gen)
                    p.copy_(new.to(p))
            yield [n for n in layers]
        finally:
            with torch.no_grad():
                for (_, p), old in zip(params, saved, strict=True):
                    p.copy_(old)


def _detached(t: torch.Tensor) -> torch.Tensor:
    return t.detach()


_ACTIVATIONS = {"Sigmoid": "Sigmoid", "Softmax": "Softmax", "Softmax2d": "Softmax", "LogSoftmax": "LogSoftmax"}


def logits_module(backend: TorchBackend, x: np.ndarray) -> tuple[str, str] | None:
    """(the module whose output feeds the model's final Sigmoid/Softmax module, that activation), when the
    model's output is that activation's: what ``--output`` names to explain the logits instead."""
    calls = []  # (name, module type, input tensor ids, output tensor)
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: calls.append(
                 (n, type(m).__name__, {id(v) for v in i if isinstance(v, torch.Tensor)}, o)))
             for n, m in backend.module.named_modules() if n]
    try:
        with backend.session(), torch.no_grad():
            out = backend._select(backend._call(backend.to_tensor(x)))
    finally:
        for h in hooks:
            h.remove()
    final = [c for c in calls if isinstance(c[3], torch.Tensor) and c[3] is out and c[1] in _ACTIVATIONS]
    if not final:
        return None
    name, kind, inputs, _ = final[0]
    source = next((c[0] for c in reversed(calls) if isinstance(c[3], torch.Tensor) and id(c[3]) in inputs), None)
    return None if source is None else (source, _ACTIVATIONS[kind])


def _tree(fn, value):
    """``fn`` on every tensor of a raw output (tensor, dict, list or tuple of them); other leaves as they are."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, dict) or hasattr(value, "keys"):
        return {k: _tree(fn, value[k]) for k in value.keys()}
    if isinstance(value, (list, tuple)):
        return [_tree(fn, v) for v in value]
    return value


def _kind_of(value) -> str:
    """``list[dict]``, ``tuple[Tensor]``... for messages about a raw output."""
    if isinstance(value, (list, tuple)) and value:
        return f"{type(value).__name__}[{type(value[0]).__name__}]"
    return type(value).__name__


class TorchOps:
    """Arrays as torch tensors on the model's device, in its floating dtype (``backends.arrays``)."""

    xp = torch_xp
    native = True

    def __init__(self, backend: TorchBackend):
        ref = backend._param()
        self.device = ref.device if ref is not None else torch.device("cpu")
        self.dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32

    def asarray(self, x, dtype: str | None = None) -> torch.Tensor:
        t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.ascontiguousarray(x))
        return t.to(device=self.device, dtype=getattr(torch, dtype) if dtype else self.dtype)

    to_numpy = staticmethod(TorchBackend.to_numpy)

    def arange(self, start: int, stop: int) -> torch.Tensor:
        return torch.arange(start, stop, device=self.device)

    def normal(self, shape, keys, dtype=None) -> torch.Tensor:
        """Row r drawn on the device from a generator seeded by ``keys[r]`` (see ``arrays.seed_of``)."""
        out = torch.empty((len(keys), *shape), device=self.device, dtype=torch.float32)
        for r, key in enumerate(keys):
            out[r].normal_(generator=torch.Generator(device=self.device).manual_seed(seed_of(key)))
        return out.to(dtype or self.dtype)


# ---- layer capture -------------------------------------------------------------------------------------
class _Captured:
    def __init__(self):
        self._acts: dict[str, torch.Tensor] = {}
        self._calls: dict[str, int] = {}

    def hook(self, name, call: int | None = None):
        """Capture ``name``'s output: its last call, or only call ``call`` (0-based) of a module run
        several times (``--layer name#k``)."""
        def _hook(_module, _inputs, output):
            seen = self._calls.get(name, 0)
            self._calls[name] = seen + 1
            if call is not None and seen != call:
                return None
            if isinstance(output, torch.Tensor) and output.is_floating_point():
                self._acts[name] = output
                # The model goes on with a copy, so a later in-place op (torchvision ResNet's ReLU after
                # bn1, `out += identity` after bn2) cannot rewrite what was captured at this layer.
                return output.clone()
            return None
        return _hook

    def activations(self) -> dict[str, torch.Tensor]:
        return dict(self._acts)

    def calls(self) -> dict[str, int]:
        return dict(self._calls)


@contextmanager
def _capture(module: torch.nn.Module, names: Sequence[str]):
    captured = _Captured()
    handles = []
    if names:
        modules = dict(module.named_modules())
        missing = [n for n in names if _module_and_call(n)[0] not in modules]
        if missing:
            import difflib

            close = difflib.get_close_matches(missing[0], [n for n in modules if n], n=3)
            raise UsageError(f"the model has no layer '{missing[0]}'",
                             hint=f"did you mean {', '.join(close)}?" if close else
                             "`xaiready check` lists the layers that can be hooked")
    try:
        for name in names:
            base, call = _module_and_call(name)
            handles.append(modules[base].register_forward_hook(captured.hook(name, call)))
        yield captured
    finally:
        for h in handles:
            h.remove()
        handles.clear()


def _module_and_call(name: str) -> tuple[str, int | None]:
    """``blocks.0.attn#1`` -> ("blocks.0.attn", 1): the module and which of its calls (0-based)."""
    base, sep, call = name.rpartition("#")
    return (base, int(call)) if sep and call.isdigit() else (name, None)


def _torchscript_hook_reason(module, names: list[str]) -> str:
    if not names:
        return ("TorchScript model has no submodules left (frozen or inlined), so there is no layer to "
                "hook; rebuild an eager model with --arch to get CAM access")
    try:
        handle = dict(module.named_modules())[names[0]].register_forward_hook(lambda *a: None)
    except RuntimeError as exc:
        return (f"TorchScript refuses Python hooks ({str(exc).splitlines()[0]}); rebuild an eager model "
                "with --arch to get CAM access")
    handle.remove()
    return ("TorchScript accepts hooks on its submodules but never calls them, because the forward runs "
            "as a compiled graph; rebuild an eager model with --arch to get CAM access")


# ---- ReLU gradient override at the function level --------------------------------------------------------
class _GuidedRelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, mode, inplace):
        out = x.clamp_(min=0) if inplace else x.clamp(min=0)
        if inplace:
            ctx.mark_dirty(x)
        ctx.save_for_backward(out)
        ctx.mode = mode
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        positive_grad = grad.clamp(min=0)
        if ctx.mode == "deconvnet":
            return positive_grad, None, None
        return positive_grad * (out > 0).to(grad.dtype), None, None


class _DetachReplay(TorchFunctionMode):
    """Records what ``Tensor.detach`` returns on one forward, then hands those values back, in call
    order, on later forwards (where the shape matches)."""

    def __init__(self):
        super().__init__()
        self.recorded: list[torch.Tensor] = []
        self.sites: list[str] = []
        self.module = ""
        self.replaying = False
        self.at = 0

    def start(self):
        self.at = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.Tensor.detach or func is torch.detach:
            if not self.replaying:
                self.recorded.append(out.clone())
                self.sites.append(self.module)
            elif self.at < len(self.recorded) and self.recorded[self.at].shape == out.shape:
                out = self.recorded[self.at].to(out.dtype)
            self.at += 1
        return out


class _ReluOverride(TorchFunctionMode):
    """Replaces every ReLU call (nn.ReLU, F.relu, torch.relu, Tensor.relu, in-place or not)."""

    def __init__(self, mode: str, stats: OverrideStats):
        super().__init__()
        self.mode, self.stats = mode, stats

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in _RELU_NAMES and args and isinstance(args[0], torch.Tensor):
            self.stats.relu_calls += 1
            inplace = name.endswith("_") or bool(kwargs.get("inplace", args[1] if len(args) > 1 else False))
            if args[0].requires_grad and torch.is_grad_enabled():
                self.stats.overridden += 1
                return _GuidedRelu.apply(args[0], self.mode, inplace)
        elif name in _NOT_OVERRIDABLE:
            self.stats.not_overridable[name.rstrip("_")] = self.stats.not_overridable.get(name.rstrip("_"), 0) + 1
        return func(*args, **kwargs)
