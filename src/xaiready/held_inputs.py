"""Multi-input models (image plus metadata, two views, image plus mask): one input explained, the
others held fixed.

A handle of such a model is presented to every method and check as a single-input model: its
backend is a copy whose model call (``TorchBackend._call``, ``TensorFlowBackend._call_here``,
``OnnxRuntimeBackend._run``) feeds the held inputs beside the explained one, so gradients, CAM,
IG, SmoothGrad and black-box methods stay written once over the single-input protocol. The model,
its layers and their names are the model's own; nothing is wrapped around it.

Methods and checks replicate rows (IG path points, noise samples, occlusion masks, finite-difference
probes) and bound their chunks, so a row cannot be traced back to its sample from inside a pass.
Held inputs are therefore fed as one row broadcast to every row of a pass. When the held rows differ
between samples (rows that are all equal count as one), ``explain`` and ``evaluate`` run sample by
sample, each with its own held rows, and ``check`` measures the first sample. Measured on a small
CNN, 8 samples of 3x32x32, three runs on a shared 2-core CPU (``bench/bench_multi_input.py``), sample
by sample costs 0.9-1.5x one batched run for IG (32 steps) and 1.2-2.7x for occlusion, whose passes
are many rows per sample anyway, and 3-10x (1-12 ms more per sample) for single-pass methods
(saliency, Grad-CAM); a held row shared by every sample runs as fast as a single-input model.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._lazy import is_torch_tensor
from .errors import InputError, UsageError


@dataclass(frozen=True)
class ModelInput:
    """One input the model takes: its name, its declared shape (None where the framework declares
    none), whether it must be given, and whether it is passed by keyword (PyTorch)."""

    name: str
    shape: tuple[int | None, ...] | None = None
    required: bool = True
    keyword: bool = False
    dtype: str | None = None  # as the framework names it: "tensor(int64)" (ONNX), "float32" (Keras)


@dataclass
class HeldInputs:
    """The explained input's name, the model's inputs in call order, and the held arrays.

    ``aligned``: a held array with as many rows as a pass is fed row for row (a pass over the caller's
    own batch, as when a target is resolved); otherwise only a single held row is accepted, and
    broadcast to every row of the pass."""

    explained: str
    inputs: tuple[ModelInput, ...]
    values: dict[str, np.ndarray]
    aligned: bool = False
    open_names: bool = False  # PyTorch ``**kwargs``: names beyond the signature go by keyword
    _tensors: dict = field(default_factory=dict, repr=False)

    def rows(self, name: str, n: int) -> np.ndarray:
        """The held input ``name`` for a pass of ``n`` rows."""
        value = self.values[name]
        if value.shape[0] == n and (n == 1 or self.aligned):
            return value
        if value.shape[0] == 1:
            return np.broadcast_to(value, (n, *value.shape[1:]))
        raise InputError(f"held input '{name}' has {value.shape[0]} rows, one per sample, but a pass of {n} rows "
                         "cannot tell which row belongs to which sample",
                         hint="explain one sample at a time (xr.explain does so by itself)")

    def select(self, i: int) -> HeldInputs:
        """The held inputs of sample ``i`` alone (one row each; rows shared by all samples stay)."""
        one = {k: v if v.shape[0] == 1 else v[i:i + 1] for k, v in self.values.items()}
        return dataclasses.replace(self, values=one, aligned=False, _tensors={})

    @property
    def per_sample(self) -> int:
        """How many distinct samples the held rows describe (1 when every held input has one row)."""
        return max((v.shape[0] for v in self.values.values()), default=1)

    def describe(self, x_shape) -> dict[str, Any]:
        """The report's ``inputs`` entry: the explained input and the held ones, with their shapes."""
        return {"explained": {"name": self.explained, "shape": list(x_shape)},
                "held": {k: list(v.shape) for k, v in self.values.items()}}

    # ---- how each framework is fed ----------------------------------------------------------------
    def call_torch(self, module, xt):
        """``module`` on the explained tensor ``xt`` and the held tensors (on ``xt``'s device, floats in
        its dtype): positional parameters by position, keyword-only ones (and ``**kwargs``) by name."""
        given = {spec.name: xt if spec.name == self.explained else self._torch(spec.name, xt)
                 for spec in self.inputs if spec.name == self.explained or spec.name in self.values}
        extra = {k: self._torch(k, xt) for k in self.values if k not in given}
        args, kwargs, gap = [], dict(extra), False
        for spec in self.inputs:
            if spec.name not in given:
                gap = True  # an optional input left out: later ones must go by name
            elif spec.keyword or gap:
                kwargs[spec.name] = given[spec.name]
            else:
                args.append(given[spec.name])
        return module(*args, **kwargs)

    def _torch(self, name: str, xt):
        import torch

        value = self.values[name]
        dtype = xt.dtype if value.dtype.kind == "f" else None
        key = (name, str(xt.device), str(dtype))
        if key not in self._tensors:  # one copy to the device per held input, not one per pass
            self._tensors[key] = torch.as_tensor(np.ascontiguousarray(value), device=xt.device, dtype=dtype)
        t = self._tensors[key]
        n = xt.shape[0]
        if t.shape[0] == n and (n == 1 or self.aligned):
            return t
        self.rows(name, n)  # the same rule (and message) as every framework
        return t.expand(n, *t.shape[1:]).contiguous()

    def call_keras(self, model, xt):
        """A functional Keras model on a dict of its inputs by name (the held ones as constants)."""
        import tensorflow as tf

        feed = {self.explained: xt}
        for spec in self.inputs:
            if spec.name in self.values:
                value = self.rows(spec.name, int(xt.shape[0]))
                dtype = tf.as_dtype(spec.dtype) if spec.dtype else None
                feed[spec.name] = tf.convert_to_tensor(np.ascontiguousarray(value), dtype=dtype)
        return model(feed, training=False)

    def onnx_feeds(self, n: int) -> dict[str, np.ndarray]:
        """ONNX Runtime feeds of the held inputs for a pass of ``n`` rows, in each input's declared type."""
        from .backends.onnxruntime import _NUMPY_TYPES

        return {spec.name: np.ascontiguousarray(self.rows(spec.name, n), dtype=_NUMPY_TYPES.get(spec.dtype, np.float32))
                for spec in self.inputs if spec.name in self.values}


# ---- which inputs a model takes ---------------------------------------------------------------------
def model_inputs(handle) -> tuple[list[ModelInput], bool]:
    """The model's inputs in call order, and whether it also takes other names (``**kwargs``)."""
    backend = handle.backend
    reference = getattr(handle, "reference", None)
    if backend.framework == "onnxruntime":
        return [_onnx_input(s) for s in backend.inputs], False
    if reference is not None and reference.backend.framework == "onnxruntime":
        # a converted graph takes the ONNX inputs positionally, in the graph's order
        return [_onnx_input(s) for s in reference.backend.inputs], False
    if backend.framework == "torch":
        return _torch_inputs(backend)
    if backend.framework == "tensorflow":
        if backend.kind != "keras":
            raise UsageError(f"a {backend.kind} signature is called with one tensor here",
                             hint="multi-input TensorFlow models are supported as Keras models (.keras, .h5)")
        try:
            tensors = list(backend.model.inputs or [])
        except (AttributeError, ValueError) as exc:  # a subclassed model declares no input tensors
            raise UsageError("the inputs of this Keras model are not declared",
                             hint="multi-input Keras models need named keras.Input()s (a functional model)") from exc
        return [ModelInput(str(t.name).split(":")[0], tuple(t.shape), dtype=str(t.dtype)) for t in tensors], False
    raise UsageError(f"a {backend.framework} model cannot take several inputs here")


def _onnx_input(spec) -> ModelInput:
    return ModelInput(spec.name, tuple(d if isinstance(d, int) and d > 0 else None for d in spec.shape),
                      dtype=spec.dtype)


def _torch_inputs(backend) -> tuple[list[ModelInput], bool]:
    if backend.kind == "torchscript":
        try:
            schema = backend.module.forward.schema.arguments[1:]  # the first argument is self
        except (AttributeError, RuntimeError) as exc:
            raise UsageError(f"the inputs of this TorchScript model cannot be read ({exc})") from exc
        return [ModelInput(a.name, required=not a.has_default_value(), keyword=a.kwarg_only) for a in schema], False
    try:
        params = inspect.signature(backend.module.forward).parameters.values()
    except (TypeError, ValueError) as exc:
        raise UsageError(f"the inputs of {type(backend.module).__name__}.forward cannot be read ({exc})") from exc
    found, open_names = [], False
    for p in params:
        if p.kind is p.VAR_KEYWORD:
            open_names = True
        elif p.kind is not p.VAR_POSITIONAL:
            found.append(ModelInput(p.name, required=p.default is p.empty, keyword=p.kind is p.KEYWORD_ONLY))
    return found, open_names


# ---- from the caller's dict to a held handle ----------------------------------------------------------
def as_array(name: str, value: Any) -> np.ndarray:
    """A held or explained array from NumPy or a framework tensor, its dtype kept; NaN/inf refused."""
    if is_torch_tensor(value):
        value = value.detach().cpu().numpy()
    elif hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        value = value.numpy()
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiub":
        raise InputError(f"input '{name}' has dtype {arr.dtype}; a numeric array is needed")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise InputError(f"input '{name}' contains NaN or infinite values", hint="clean the input first")
    if arr.ndim == 0:
        raise InputError(f"input '{name}' is a scalar; inputs need a batch axis", hint="e.g. shape (1, K)")
    return arr


def explained_name(arrays: Mapping[str, np.ndarray], inputs: str | None) -> str:
    """``inputs`` if given, else the only image-shaped (4-D) array."""
    listing = ", ".join(f"{k} {tuple(v.shape)}" for k, v in arrays.items())
    if inputs is not None:
        if inputs not in arrays:
            raise UsageError(f"the input to explain, '{inputs}', is not among the given inputs ({listing})",
                             hint="name one of them with inputs= / --explain-input")
        return inputs
    images = [k for k, v in arrays.items() if v.ndim == 4]
    if len(images) != 1:
        raise UsageError(f"{'no' if not images else len(images)} image-shaped (4-D) inputs among {listing}",
                         hint="say which to explain with inputs=NAME / --explain-input NAME")
    return images[0]


def held_inputs(handle, arrays: Mapping[str, Any], inputs: str | None = None) -> tuple[HeldInputs, np.ndarray]:
    """Check ``arrays`` against the model's inputs; the held inputs and the explained array."""
    arrays = {str(k): as_array(str(k), v) for k, v in arrays.items()}
    if not arrays:
        raise UsageError("no inputs given", hint="pass a dict of the model's inputs by name")
    specs, open_names = model_inputs(handle)
    known = {s.name for s in specs}
    names = ", ".join(s.name for s in specs)
    unknown = [k for k in arrays if k not in known and not open_names]
    if unknown:
        raise UsageError(f"the model has no input '{unknown[0]}'", hint=f"its inputs are {names}")
    missing = [s.name for s in specs if s.required and s.name not in arrays]
    if missing:
        raise UsageError(f"input '{missing[0]}' is missing (the model takes {names})",
                         hint=f"give every input by name: --input {missing[0]}=FILE, or {{'{missing[0]}': array}}")
    explained = explained_name(arrays, inputs)
    for spec in specs:
        if spec.name in arrays:
            _check_declared(spec, arrays[spec.name])
    x = handle.as_input(arrays.pop(explained))
    n = x.shape[0]
    for k, v in arrays.items():
        if v.shape[0] not in (1, n):
            raise InputError(f"held input '{k}' has {v.shape[0]} rows but '{explained}' has {n} samples",
                             hint="give held inputs one row (shared by every sample) or one row per sample")
        if v.shape[0] > 1 and (v == v[:1]).all():
            arrays[k] = v[:1]  # the same for every sample: one row, so the batch explains in one go
    return HeldInputs(explained, tuple(specs), arrays, open_names=open_names), x


def _check_declared(spec: ModelInput, value: np.ndarray) -> None:
    """A shape the framework declares (Keras, ONNX) is checked before any pass, batch axis aside."""
    if spec.shape is None:
        return
    declared = spec.shape
    wrong = len(declared) != value.ndim or any(d is not None and d != v for d, v in
                                                 zip(declared[1:], value.shape[1:], strict=False))
    if wrong:
        dims = ", ".join("?" if d is None else str(d) for d in declared)
        raise InputError(f"input '{spec.name}' has shape {tuple(value.shape)} but the model takes ({dims})",
                         hint="fix the array's shape (the first axis is the batch)")


def hold(handle, held: HeldInputs):
    """A handle over the same model whose every pass feeds ``held`` beside the explained input.

    The caller's handle is left as it was; a converted graph's ONNX Runtime reference is held too."""
    from .backends.onnxruntime import example_shape, guess_layout

    new = copy.copy(handle)
    backend = copy.copy(handle.backend)
    backend.held = held
    spec = next(s for s in held.inputs if s.name == held.explained)
    if backend.framework == "onnxruntime":
        backend.input = next(s for s in backend.inputs if s.name == held.explained)
        backend.layout = guess_layout(backend.input.shape)
        new.layout = backend.layout
    elif hasattr(backend, "_example_shape") and spec.shape is not None:  # a converted graph's torch model
        layout = guess_layout(spec.shape)
        backend._example_shape = example_shape(spec.shape, layout)
        backend.fixed_batch = spec.shape[0] if spec.shape and spec.shape[0] else None
        new.layout = layout
    new.backend = backend
    new.notes = list(handle.notes)
    new.extra_checks = list(handle.extra_checks)
    new.held_inputs = held
    reference = getattr(handle, "reference", None)
    if reference is not None and reference is not handle:
        new.reference = hold(reference, held)
    return new


@contextmanager
def sample(handle, i: int) -> Iterator[None]:
    """Within the block, ``handle`` (from ``hold``) feeds the held rows of sample ``i`` only."""
    handles = [handle]
    reference = getattr(handle, "reference", None)
    if reference is not None and getattr(reference, "held_inputs", None) is not None:
        handles.append(reference)
    saved = [h.backend.held for h in handles]
    try:
        for h in handles:
            h.backend.held = h.held_inputs.select(i)
        yield
    finally:
        for h, old in zip(handles, saved, strict=True):
            h.backend.held = old


def hold_in_place(handle, arrays: Mapping[str, Any], inputs: str | None = None, *, check: bool = False):
    """``handle`` itself made to hold the inputs of ``arrays`` but the explained one, which is returned
    (for the command line, which owns its handle). Held rows that differ between samples are refused
    for explain (a batch then needs one run per sample); ``check`` measures the first sample."""
    new, x = split(handle, arrays, inputs)
    held = new.held_inputs
    if held.per_sample > 1 and x.shape[0] > 1:
        if not check:
            differ = next(k for k, v in held.values.items() if v.shape[0] > 1)
            raise UsageError(f"held input '{differ}' differs between the {x.shape[0]} samples",
                             hint="explain one sample at a time here; xr.explain(model, {...}) loops over samples")
        x = first_sample(new, x)
    handle.__dict__.update(new.__dict__)
    return x


def first_sample(handle, x: np.ndarray) -> np.ndarray:
    """Readiness on a batch whose held rows differ between samples: ``handle`` narrowed to sample 0
    (a check's probes replicate rows, and a row cannot be traced to its sample), said in the notes."""
    held = handle.held_inputs
    if held.per_sample == 1 or x.shape[0] == 1:
        return x
    for h in (handle, getattr(handle, "reference", None)):
        if h is not None and getattr(h, "held_inputs", None) is not None:
            h.held_inputs = h.held_inputs.select(0)
            h.backend.held = h.held_inputs
    handle.notes.append(f"the held inputs differ between the {x.shape[0]} samples: measured on sample 0 "
                        "with its own held rows")
    return x[:1]


def split(handle, x: Mapping[str, Any], inputs: str | None = None):
    """The held handle and the explained array for a dict ``x`` of the model's inputs by name."""
    held, arr = held_inputs(handle, x, inputs)
    return hold(handle, held), arr


def per_sample(handle, x: np.ndarray, target, run: Callable[[np.ndarray, Any, slice], Any]) -> list:
    """``run(x[i:i+1], target_i, slice(i, i+1))`` for each sample ``i``, ``handle`` feeding that
    sample's held rows; one call ``run(x, target, slice(None))`` when every held input has one row. A
    target with per-sample choices (``Class([3, 5])``) is resolved on the whole batch's output first,
    then narrowed to each sample."""
    held = handle.held_inputs
    if held.per_sample == 1 or x.shape[0] == 1:
        return [run(x, target, slice(None))]
    if target is not None and not target.resolved and target.framework_fn is None:
        target = _resolve_per_sample(handle, x, target)
    results = []
    for i in range(x.shape[0]):
        with sample(handle, i):
            one = None if target is None else target.take(np.array([i])) if target.resolved else target
            results.append(run(x[i:i + 1], one, slice(i, i + 1)))
    return results


def _resolve_per_sample(handle, x: np.ndarray, target):
    """``target`` fixed on the whole batch's output, each sample's row computed with its own held rows
    (a graph with a fixed batch runs one sample per pass anyway). A raw-output target (a detector's
    list[dict]) resolves in one pass over the batch, its held rows fed row for row."""
    held = handle.held_inputs
    if getattr(target, "raw_output", False):
        held.aligned = True
        try:
            return handle.resolve(target, x)
        finally:
            held.aligned = False
    outputs = []
    for i in range(x.shape[0]):
        with sample(handle, i):
            outputs.append(handle.forward(x[i:i + 1]))
    return target.resolve(np.concatenate(outputs), channel_axis=handle.channel_axis)


def merge_attributions(parts: list, x_shape) -> Any:
    """One Attribution from per-sample ones: arrays joined along the batch, the rest from the first,
    each sample's health findings and warnings kept with its index."""
    if len(parts) == 1:
        return parts[0]

    def cat(name):
        values = [getattr(p, name) for p in parts]
        return None if any(v is None for v in values) else np.concatenate([np.asarray(v) for v in values])

    first = parts[0]
    targets = [p.target for p in parts]
    target = dict(first.target)
    if "k" in target and any(t.get("k") != target["k"] for t in targets):
        target["k"] = [t.get("k") for t in targets]
    health = [{**f, "sample": i} for i, p in enumerate(parts) for f in p.info.get("health", [])]
    info = {**first.info, "per_sample": [p.info for p in parts]}
    if "health" in first.info:
        info["health"] = health
    every = set.intersection(*(set(p.warnings) for p in parts))  # said of every sample: said once
    warnings = tuple(dict.fromkeys([w for w in first.warnings if w in every] +
                                   [f"sample {i}: {w}" for i, p in enumerate(parts) for w in p.warnings
                                    if w not in every]))
    return dataclasses.replace(first, values=cat("values"), raw=cat("raw"), scores=cat("scores"),
                               output=cat("output"), contrast=None, target=target,
                               input_shape=tuple(x_shape), info=info, warnings=warnings)


def merge_metrics(parts: list[dict]) -> dict:
    """One ``{metric: MetricResult}`` from per-sample ones: values and curves joined, costs summed."""
    if len(parts) == 1:
        return parts[0]
    merged = {}
    for name, first in parts[0].items():
        each = [p[name] for p in parts]
        curves = None if first.curves is None else np.concatenate([r.curves for r in each])
        merged[name] = dataclasses.replace(
            first, values=np.concatenate([r.values for r in each]), curves=curves,
            evaluations=sum(r.evaluations for r in each), explanations=sum(r.explanations for r in each),
            calls=sum(r.calls for r in each))
    return merged


def take_attribution(attribution: Any, index: slice) -> Any:
    """The samples ``index`` of an Attribution (or of a plain array of maps)."""
    if index == slice(None):
        return attribution
    if not hasattr(attribution, "values") or isinstance(attribution, np.ndarray):
        return np.asarray(attribution)[index]
    rows = {name: None if getattr(attribution, name) is None else np.asarray(getattr(attribution, name))[index]
            for name in ("values", "raw", "scores", "output")}
    return dataclasses.replace(attribution, **rows, contrast=None)


def held_at_random(handle, reference) -> tuple[Any, Any]:
    """``handle`` (a converted graph) and its ONNX Runtime ``reference`` with every input but the image
    held at seeded random values (zeros for integer inputs), to verify a conversion before any input is
    known; a graph with one input gets both back as they are."""
    from .backends.onnxruntime import example_shape, guess_layout
    from .inputs import random_input

    specs = [_onnx_input(s) for s in reference.backend.inputs]
    if len(specs) == 1:
        return handle, reference
    images = [s for s in specs if s.shape is not None and len(s.shape) == 4]
    explained = (images[0] if len(images) == 1 else specs[0]).name
    values = {}
    for i, spec in enumerate(specs):
        shape = spec.shape and example_shape(spec.shape, guess_layout(spec.shape))
        if spec.name == explained:
            continue
        if shape is None:  # left unheld: the verification then fails and says which inputs the graph takes
            return handle, reference
        floating = spec.dtype in (None, "tensor(float)", "tensor(double)", "tensor(float16)")
        values[spec.name] = random_input(shape, seed=300 + i) if floating else np.zeros(shape, dtype=np.int64)
    held = HeldInputs(explained, tuple(specs), values)
    return hold(handle, held), hold(reference, held)


def require_single(handle) -> None:
    """A model that needs several inputs, given one array: a usage error naming its inputs."""
    if getattr(handle, "held_inputs", None) is not None:
        return
    try:
        specs, _ = model_inputs(handle)
    except UsageError:
        return  # inputs that cannot be read: the model's own call says what is wrong
    required = [s.name for s in specs if s.required]
    if len(required) > 1:
        raise UsageError(f"the model takes {len(required)} inputs ({', '.join(required)}), not one array",
                         hint=f"give each by name: --input {required[0]}=FILE --input {required[1]}=FILE, or "
                              f"xr.explain(model, {{'{required[0]}': ..., '{required[1]}': ...}}, inputs=NAME)")
