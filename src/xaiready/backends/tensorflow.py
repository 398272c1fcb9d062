"""TensorFlow backend: Keras 3 models, SavedModel signatures and frozen GraphDefs, behind ``base``.

Gradients come from ``tf.GradientTape`` in eager mode, watching only the input (never variables), so
nothing is written into the model. Layers of Keras models (nested models included) are captured by
wrapping the layer's ``call`` on the instance for the duration of one pass: the tape records the
wrapped output, so the gradient of the score with respect to it is exact, and no new ``keras.Model``
is built (which is what fails with "Graph disconnected" on nested models elsewhere). Every wrap is
removed in ``finally``. Compiled functions (SavedModel, GraphDef) expose internal tensors only where
the loader could split the graph at them (``splits``), and those are kept only if they verify.

Arrays cross the protocol in the input's own layout (NHWC for TensorFlow); nothing is transposed.
"""

from __future__ import annotations

import difflib
import threading
from collections.abc import Sequence
from contextlib import contextmanager

import numpy as np
import tensorflow as tf

from ..errors import InputError, UsageError
from ..targets import Detection, Target, runner_up
from . import tensorflow_trace
from .base import BreakFinding, GradResult, LayerAccess, OverrideStats, grad_result, select_output
from .keras_graph import layer_children, safe_gradient, walk_layers, wrapped_calls

_TF_ERRORS = (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError, ValueError, TypeError,
              IndexError)


class TensorFlowBackend:
    framework = "tensorflow"
    layout = "NHWC"
    supports_contrast = True  # vjp(contrast=True) keeps the tape for the runner-up class (one-pass kinds)
    held = None  # a multi-input Keras model's other inputs, fed beside the explained one (``held_inputs``)

    def __init__(self, model, *, kind: str = "keras", output: str | int | None = None,
                 input_key: str | None = None, splits=None, graph_def=None, input_spec=None):
        """``model``: a keras.Model (kind "keras") or a callable TF function (kinds "savedmodel",
        "graphdef"), called with one tensor, by keyword ``input_key`` when given.

        ``splits``: for functions, an object with ``names()`` and ``get(name) -> (head, tail)`` where
        ``head(x)`` is the internal tensor and ``tail(x, t)`` the output (see ``formats.tf_graph``).
        ``graph_def``: the function's GraphDef, for break localization and ReLU counting.
        ``input_spec``: ``(shape, dtype)`` of a function's input (unknown dims as None or -1).
        """
        self.model = model
        self.kind = kind
        self.output = output
        self.input_key = input_key
        self.splits = splits
        self.graph_def = graph_def
        self.input_spec = input_spec
        self.keep_alive = None  # e.g. the loaded SavedModel object that owns a signature's variables
        self._depth = 0
        self._override_fn = None  # compiled graphs under a ReLU override: the re-imported copy
        self.device = None  # --device: where the model's ops are placed (None: TensorFlow's default)

    # ---- context ---------------------------------------------------------------------------------------
    @contextmanager
    def session(self):
        """Nothing to switch: every call passes ``training=False`` explicitly; kept for the protocol."""
        self._depth += 1
        try:
            yield self
        finally:
            self._depth -= 1

    # ---- tensors in and out ---------------------------------------------------------------------------
    def input_dtype(self):
        if self.kind == "keras":
            inputs = getattr(self.model, "inputs", None) or []
            dtype = getattr(inputs[0], "dtype", None) if inputs else None
            dtype = tf.as_dtype(dtype) if dtype else tf.float32
        else:
            dtype = tf.as_dtype(self.input_spec[1]) if self.input_spec else tf.float32
        return dtype if dtype.is_floating else tf.float32

    def to_tensor(self, x: np.ndarray) -> tf.Tensor:
        return tf.convert_to_tensor(np.ascontiguousarray(x), dtype=self.input_dtype())

    def to_device(self, spec: str) -> str:
        """Place the model's ops on the CPU or a visible GPU (TensorFlow's own device names)."""
        from ..devices import gpu_index

        index = gpu_index(spec, "TensorFlow", len(tf.config.list_logical_devices("GPU")))
        self.device = "/CPU:0" if index is None else f"/GPU:{index}"
        return self.device

    def _call(self, xt):
        with tf.device(self.device):
            return self._call_here(xt)

    def _call_here(self, xt):
        if self._override_fn is not None:
            return self._override_fn(xt)
        if self.held is not None:
            return self.held.call_keras(self.model, xt)
        if self.kind == "keras":
            return self.model(xt, training=False)
        if self.input_key is not None:
            return self.model(**{self.input_key: xt})
        return self.model(xt)

    def _run(self, xt):
        try:
            return self._select(self._call(xt))
        except (UsageError, InputError):
            raise
        except _TF_ERRORS as exc:
            text = getattr(exc, "message", None) or str(exc)
            first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
            raise InputError(f"the model could not run on an input of shape {tuple(xt.shape)}: {first[:300]}",
                             hint="check --input-shape / --layout (TensorFlow models take NHWC), "
                                  "or the input file") from exc

    def _select(self, raw):
        """Pick the output to explain from a tensor, dict or list output."""
        return select_output(raw, self.output, tf.is_tensor)

    def output_names(self, x: np.ndarray) -> list[str]:
        raw = self._call(self.to_tensor(x))
        if isinstance(raw, dict):
            return [str(k) for k in raw]
        if isinstance(raw, (tuple, list)):
            return [str(i) for i in range(len(raw))]
        return []

    # ---- protocol ------------------------------------------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        return self._run(self.to_tensor(x)).numpy()

    def vjp(self, x: np.ndarray, target: Target, *, layers: Sequence[str] = (),
            input_grad: bool = True, contrast: bool = False) -> GradResult:
        layers = list(dict.fromkeys(layers))
        xt = self.to_tensor(x)
        if layers and self.kind != "keras":
            return self._vjp_split(xt, target, layers, input_grad)  # no contrast: the health check re-explains
        with _capture(self, layers) as captured:
            def run(_tape):
                return self._run(xt), captured

            return self._one_pass(xt, target, input_grad, run, contrast=contrast)

    def observe(self, x: np.ndarray, layers: Sequence[str]) -> dict[str, np.ndarray]:
        """The named layers' outputs on one pass at ``x``, whatever its size (for layout measurement)."""
        from ..targets import Custom

        total = Custom(lambda out: tf.reduce_sum(tf.reshape(out, (tf.shape(out)[0], -1)), axis=1), name="sum")
        return self.vjp(x, total, layers=layers, input_grad=False).activations

    def _one_pass(self, xt, target, input_grad, run, *, contrast: bool = False) -> GradResult:
        """Forward and backward once; ``run(tape)`` returns the output and what it captured. With
        ``contrast`` the tape is kept for a second backward of the runner-up class."""
        gradless = False
        with tf.GradientTape(watch_accessed_variables=False, persistent=contrast) as tape:
            tape.watch(xt)
            try:
                out, captured = run(tape)
            except LookupError as exc:
                # A compiled function builds its backward when it is called under a tape, so an op
                # without a registered gradient fails the forward itself: run it unrecorded instead.
                if not no_gradient_error(exc):
                    raise
                gradless = True
                with tape.stop_recording():
                    out, captured = run(tape)
            out_np = out.numpy()
            if not target.resolved:
                target = target.resolve(out_np, channel_axis=-1)
            differentiable = not gradless and (out.dtype.is_floating or out.dtype.is_complex)
            # A detection target reads a head tensor on the host and seeds its backward, as class
            # targets do; only a Custom target's fn must run in TensorFlow's own ops.
            if target.framework_fn is not None and not isinstance(target, Detection):
                score = target.framework_fn(out)
                scores_np = np.asarray(score).astype(np.float64).reshape(-1)
                root, seed = tf.reduce_sum(score), None
                differentiable = differentiable and score.dtype.is_floating
            else:
                scores_np = target.scores(out_np)
                root = out
                seed = tf.constant(target.seed(out_np), dtype=out.dtype) if differentiable else None
        acts = captured.activations()
        sources = ([xt] if input_grad else []) + list(acts.values())
        grads = [None] * len(sources)
        if differentiable and sources:
            grads = safe_gradient(tape, root, sources, seed)
        in_graph = differentiable and (not sources or any(g is not None for g in grads))
        result = grad_result(_np, out_np, scores_np, in_graph, captured.calls(), target, acts, grads, input_grad)
        other = runner_up(target, out_np) if contrast and seed is not None and in_graph else None
        if other is not None:
            other_seed = tf.constant(other.seed(out_np), dtype=seed.dtype)
            result.contrast = grad_result(_np, out_np, other.scores(out_np), in_graph, result.calls, other, acts,
                                           safe_gradient(tape, root, sources, other_seed), input_grad)
        return result

    def _vjp_split(self, xt, target, layers, input_grad):
        """Compiled functions: one pass per internal tensor, through its verified head/tail split."""
        known = self.splits.names() if self.splits is not None else []
        has = getattr(self.splits, "has", None)
        known = known + [n for n in layers if n not in known and has is not None and has(n)]
        _require_known(layers, known, "the model exposes no internal tensors")
        base = self._one_pass(xt, target, input_grad, lambda _tape: (self._run(xt), _Captured()))
        target = base.target
        scale = float(np.abs(base.output).max()) + 1.0 if base.output.dtype.kind == "f" else 1.0
        for name in layers:
            def run(tape, name=name):
                split = self.splits.get(name)
                act = split.head(xt)
                tape.watch(act)
                captured = _Captured()
                captured.record([name], act)
                return self._select(split.tail(xt, act)), captured

            try:
                part = self._one_pass(xt, target, False, run)
            except (ValueError, TypeError, KeyError, tf.errors.OpError):
                continue  # the graph cannot be split there (e.g. inside a loop): not capturable
            if name not in part.activations:
                continue
            if part.output.shape != base.output.shape or not np.allclose(part.output, base.output, rtol=1e-4,
                                                                         atol=1e-5 * scale):
                continue  # the split does not reproduce the model: not a faithful capture, drop it
            base.activations[name] = part.activations[name]
            base.layer_grads[name] = part.layer_grads[name]
            base.calls[name] = 1
        return base

    def layers(self) -> LayerAccess:
        if self.kind == "keras":
            names = [name for name, _ in walk_layers(self.model)]
            return LayerAccess(names) if names else LayerAccess([], "the model has no layers to capture")
        names = self.splits.names() if self.splits is not None else []
        if names:
            return LayerAccess(names)
        reason = getattr(self.splits, "reason", "") or (
            f"a {'SavedModel signature' if self.kind == 'savedmodel' else 'frozen graph'} runs as one compiled "
            "function; its internal tensors cannot be captured with their gradients")
        return LayerAccess([], reason)

    @contextmanager
    def relu_override(self, mode: str):
        if mode not in ("guided", "deconvnet"):
            raise UsageError(f"unknown ReLU override '{mode}'", hint="use guided or deconvnet")
        stats = OverrideStats(mode=mode)
        if self.kind != "keras":
            with self._graph_override(mode, stats):
                yield stats
            return
        with _relu_patch(mode, stats):
            yield stats

    @contextmanager
    def _graph_override(self, mode: str, stats: OverrideStats):
        """Compiled graphs: run a copy of the graph whose Relu ops carry the rule (see formats.tf_graph)."""
        overridden = getattr(self.splits, "overridden", None)
        if overridden is None:
            stats.not_overridable.update(tensorflow_trace.count_graph_ops(self.graph_def, _GRAPH_ACTIVATIONS))
            stats.note = ("the model runs as a compiled TensorFlow graph that could not be re-imported, so no "
                          "ReLU can be overridden; gradients stay plain")
            yield stats
            return
        fn = overridden(mode)
        for op_type in self.splits.path_op_types:
            name = _GRAPH_ACTIVATIONS.get(op_type)
            if name == "relu":
                stats.relu_calls += 1
                stats.overridden += 1
            elif name is not None:
                stats.not_overridable[name] = stats.not_overridable.get(name, 0) + 1
        previous = self._override_fn
        self._override_fn = fn
        try:
            yield stats
        finally:
            self._override_fn = previous

    def locate_break(self, x: np.ndarray, target: Target, status: str) -> BreakFinding | None:
        if self.kind != "keras":
            return tensorflow_trace.locate_in_graph(self, status)
        return tensorflow_trace.locate_in_keras(self, x, target, status)

    def example_shape(self) -> tuple[int, ...] | None:
        shape = None
        if self.kind == "keras":
            inputs = getattr(self.model, "inputs", None) or []
            if inputs:
                shape = tuple(inputs[0].shape)
        else:
            shape = self.input_spec[0] if self.input_spec else None
        if not shape:
            return None
        dims = [1] + [224 if d is None or d < 0 else int(d) for d in shape[1:]]
        if len(dims) == 4 and shape[3] in (None, -1):
            dims[3] = 3
        return tuple(dims)

    def state_snapshot(self) -> dict:
        """What the non-mutation promise covers: trainable flags, wrapped calls, ReLU patches."""
        if self.kind != "keras":
            return {"relu_patched": _relu_patched()}
        found = list(walk_layers(self.model, with_ops=True))
        return {
            "trainable": [getattr(layer, "trainable", None) for _, layer in found],
            "wrapped_calls": sum("call" in vars(layer) for _, layer in found),
            "relu_patched": _relu_patched(),
        }


    # ---- optional protocol: layer randomization (metrics.randomization, health checks) ----------------------
    # Properties that raise AttributeError for compiled graphs, so ``hasattr(backend, "randomized")`` is
    # False there: a frozen graph holds constants, not variables, and cannot be re-drawn in place.
    @property
    def randomizable_layers(self):
        if self.kind != "keras":
            raise AttributeError("a compiled TensorFlow graph holds constants, not variables to randomize")
        return self._randomizable_layers

    @property
    def randomized(self):
        if self.kind != "keras":
            raise AttributeError("a compiled TensorFlow graph holds constants, not variables to randomize")
        return self._randomized

    def _randomizable_layers(self) -> list[str]:
        """Leaf layers that own trainable weights, in definition order."""
        return [n for n, layer in walk_layers(self.model) if not layer_children(layer) and layer.trainable_weights]

    @contextmanager
    def _randomized(self, layers: Sequence[str], seed: int = 0):
        """Within the block the named layers hold seeded random weights; originals are restored exactly.

        As the PyTorch backend: U(-b, b) with b = 1/sqrt(fan-in) for a layer with a kernel (its bias too),
        N(0, 1) for the weights of a layer without one (e.g. normalization scales).
        """
        index = dict(walk_layers(self.model))
        _require_known(layers, [n for n in index], "")
        variables = [(index[n], v) for n in layers for v in index[n].trainable_weights]
        saved = [v.numpy().copy() for _, v in variables]
        rng = np.random.default_rng(int(seed))
        try:
            for layer, v in variables:
                kernel = next((w for w in layer.trainable_weights if len(w.shape) >= 2), None)
                fan_in = 0
                if kernel is not None:  # Dense (in, out), Conv (kh, kw, in, out), depthwise (kh, kw, in, mult)
                    depthwise = "Depthwise" in type(layer).__name__
                    fan_in = int(np.prod(kernel.shape[:2] if depthwise else kernel.shape[:-1]))
                shape = tuple(v.shape)
                new = rng.uniform(-fan_in ** -0.5, fan_in ** -0.5, shape) if fan_in else rng.standard_normal(shape)
                v.assign(new.astype(v.dtype.name if hasattr(v.dtype, "name") else v.dtype))
            yield list(layers)
        finally:
            for (_, v), old in zip(variables, saved, strict=True):
                v.assign(old)


def no_gradient_error(exc: BaseException) -> bool:
    """Whether ``exc`` is TensorFlow's "No gradient defined for operation ..." (gradients_util)."""
    return isinstance(exc, LookupError) and "No gradient defined for operation" in str(exc)


def _np(t) -> np.ndarray:
    return t.numpy() if hasattr(t, "numpy") else np.asarray(tf.convert_to_tensor(t))


def _require_known(names: Sequence[str], known: Sequence[str], none_reason: str) -> None:
    missing = [n for n in names if n not in known]
    if not missing:
        return
    close = difflib.get_close_matches(missing[0], list(known), n=3)
    raise UsageError(f"the model has no layer '{missing[0]}'" + ("" if known else f" ({none_reason})"),
                     hint=f"did you mean {', '.join(close)}?" if close else
                     "`xaiready check` lists the layers that can be captured")


# ---- Keras layers: listing and capture ----------------------------------------------------------------------
class _Captured:
    def __init__(self):
        self._acts: dict[str, object] = {}
        self._calls: dict[str, int] = {}

    def record(self, names, output):
        for name in names:
            self._calls[name] = self._calls.get(name, 0) + 1
            if tf.is_tensor(output) and output.dtype.is_floating:
                self._acts[name] = output  # the last call wins for layers used several times

    def activations(self):
        return dict(self._acts)

    def calls(self):
        return dict(self._calls)


@contextmanager
def _capture(backend: TensorFlowBackend, names: Sequence[str]):
    captured = _Captured()
    if not names:
        yield captured
        return
    index = dict(walk_layers(backend.model))
    _require_known(names, list(index), "")
    by_layer: dict[int, tuple[object, list[str]]] = {}
    for name in names:
        layer = index[name]
        by_layer.setdefault(id(layer), (layer, []))[1].append(name)

    def on_call(layer_names, _layer, args, kwargs, original):
        out = original(*args, **kwargs)
        captured.record(layer_names, out)
        return out

    with wrapped_calls(by_layer, on_call):
        yield captured


# ---- ReLU gradient override at the function level -------------------------------------------------------------
# Keras' TensorFlow backend calls ``tf.nn.relu`` through the module at call time, as do custom layers and
# Lambda functions, so replacing the module attribute for the duration of the block intercepts them all
# (nn.ReLU-style layers, activation="relu", raw tf.nn.relu). The replacement is process-wide while the
# block runs: a lock keeps two overrides from interleaving, and ``finally`` puts every attribute back.
# A ``tf.function`` traced inside the block would keep the rule in its cached graph; models are run
# eagerly here, so none is traced. No TensorFlow setting (run_functions_eagerly, ...) is touched.
_RELU = ("nn", "relu")
_NOT_OVERRIDABLE = [("nn", "relu6"), ("nn", "leaky_relu"), ("nn", "elu"), ("nn", "selu"), ("nn", "gelu"),
                    ("nn", "silu"), ("nn", "swish"), ("nn", "softplus"), ("math", "softplus"), ("nn", "crelu")]
_KERAS_NOT_OVERRIDABLE = ("hard_sigmoid", "hard_silu", "celu", "glu", "mish", "softplus")
_GRAPH_ACTIVATIONS = {"Relu": "relu", "Relu6": "relu6", "LeakyRelu": "leaky_relu", "Elu": "elu", "Selu": "selu",
                      "Softplus": "softplus"}
_PATCH_LOCK = threading.RLock()
_ACTIVE: list[str] = []  # modes of overrides in force, for state snapshots
_LOCAL = threading.local()


def _relu_patched() -> bool:
    return bool(_ACTIVE)


def _guided(original, mode: str):
    @tf.custom_gradient
    def relu(x):
        y = original(x)

        def grad(dy):
            positive = tf.maximum(dy, tf.zeros_like(dy))
            if mode == "deconvnet":
                return positive
            return positive * tf.cast(y > 0, dy.dtype)

        return y, grad

    return relu


@contextmanager
def _relu_patch(mode: str, stats: OverrideStats):
    """Within the block, ReLUs get the guided/deconvnet backward; other activations are counted."""
    import keras.src.backend.tensorflow.nn as keras_nn

    namespaces = {"nn": tf.nn, "math": tf.math}
    patched: list[tuple[object, str, object]] = []

    def guard(fn, name, relu_original=None):
        def wrapper(x, *args, **kwargs):
            depth = getattr(_LOCAL, "depth", 0)
            if depth:  # inside another counted activation (e.g. hard_silu -> relu6): count once
                return fn(x, *args, **kwargs)
            _LOCAL.depth = depth + 1
            try:
                if relu_original is not None:
                    stats.relu_calls += 1
                    stats.overridden += 1
                    return _guided(relu_original, mode)(x)
                stats.not_overridable[name] = stats.not_overridable.get(name, 0) + 1
                return fn(x, *args, **kwargs)
            finally:
                _LOCAL.depth = depth

        return wrapper

    with _PATCH_LOCK:
        try:
            space, attr = _RELU
            original = getattr(namespaces[space], attr)

            def relu_wrapper(features, name=None, _orig=original):
                return guard(_orig, "relu", relu_original=_orig)(features)

            patched.append((namespaces[space], attr, original))
            setattr(namespaces[space], attr, relu_wrapper)
            for space, attr in _NOT_OVERRIDABLE:
                module = namespaces[space]
                fn = getattr(module, attr, None)
                if fn is not None:
                    patched.append((module, attr, fn))
                    setattr(module, attr, guard(fn, "silu" if attr == "swish" else attr))
            for attr in _KERAS_NOT_OVERRIDABLE:
                fn = getattr(keras_nn, attr, None)
                if fn is not None:
                    patched.append((keras_nn, attr, fn))
                    setattr(keras_nn, attr, guard(fn, attr))
            _ACTIVE.append(mode)
            yield stats
        finally:
            for module, attr, fn in reversed(patched):
                setattr(module, attr, fn)
            patched.clear()
            if _ACTIVE:
                _ACTIVE.pop()
