"""Walking a Keras model's layer graph, shared by the TensorFlow backend and its break tracer.

``tensorflow`` (the backend: layer listing, capture, randomization) and ``tensorflow_trace`` (finding
where a gradient path dies) both need to enumerate the layers and ``keras.ops`` nodes of a model,
nested models included, to wrap their ``call`` for one pass, and to take a tape gradient that treats a
backward which cannot run as no gradient. Those helpers live here, below both modules, so neither has
to import the other for them. Layers are handled by duck typing and TensorFlow is not imported when
this module loads: ``safe_gradient`` gets it through ``tf_import``, which keeps the import order
relative to torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .tf_import import import_tensorflow

_MISSING = object()


def layer_children(layer, with_ops: bool = False) -> list:
    """The direct sub-layers of ``layer``; ``with_ops`` gives a functional graph's operations in run order."""
    if with_ops and hasattr(layer, "operations") and hasattr(layer, "_run_through_graph"):
        return list(layer.operations)  # functional graph: layers and keras.ops nodes, in run order
    flatten = getattr(layer, "_flatten_layers", None)
    if flatten is not None:
        try:
            return list(flatten(include_self=False, recursive=False))
        except TypeError:
            pass
    return list(getattr(layer, "layers", []) or [])


def walk_layers(model, prefix: str = "", with_ops: bool = False, _seen=None) -> Iterator[tuple[str, object]]:
    """(path name, layer) for every layer under ``model``, depth first; nested models as "outer/inner".

    ``with_ops`` adds the ``keras.ops`` nodes of functional graphs (e.g. ``stop_gradient``), which are
    operations, not layers, but run between them.
    """
    seen = set() if _seen is None else _seen
    for child in layer_children(model, with_ops):
        if id(child) in seen or type(child).__name__ == "InputLayer":
            continue
        seen.add(id(child))
        name = prefix + str(getattr(child, "name", type(child).__name__))
        yield name, child
        yield from walk_layers(child, name + "/", with_ops, seen)


@contextmanager
def wrapped_calls(layers: dict[int, tuple[object, list[str]]], on_call: Callable):
    """Wrap ``call`` of each layer (instance attribute only) with ``on_call(names, layer, args, kwargs,
    original)``; the class and any previous instance attribute are restored on exit."""
    patched = []
    try:
        for layer, names in layers.values():
            previous = vars(layer).get("call", _MISSING)
            original = layer.call

            def call(*args, __orig=original, __names=names, __layer=layer, **kwargs):
                return on_call(__names, __layer, args, kwargs, __orig)

            object.__setattr__(layer, "call", call)
            patched.append((layer, previous))
        yield
    finally:
        for layer, previous in reversed(patched):
            if previous is _MISSING:
                object.__delattr__(layer, "call")
            else:
                object.__setattr__(layer, "call", previous)
        patched.clear()


def safe_gradient(tape, root, sources, seed=None) -> list:
    """``tape.gradient``, where a backward that cannot run (an op without a gradient, a py_function whose
    gradient has the wrong shape) counts as no gradient at all rather than a crash."""
    tf, _ = import_tensorflow()  # already loaded (there is a tape): a lookup in sys.modules
    try:
        return list(tape.gradient(root, sources, output_gradients=seed))
    except (tf.errors.OpError, LookupError, ValueError, TypeError):
        return [None] * len(sources)
