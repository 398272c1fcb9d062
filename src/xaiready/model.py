"""ModelHandle: the framework-neutral face of a loaded model, plus where it came from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ._lazy import is_torch_tensor
from .backends.base import Backend, GradResult, LayerAccess
from .errors import InputError
from .targets import Target


@dataclass
class Source:
    """Provenance, as the report's ``model`` object spells it."""

    path: str | None
    format: str
    framework: str
    converted_from: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ModelHandle:
    """A loaded model: provenance, layout, and the backend operations methods may use."""

    def __init__(self, backend: Backend, source: Source, *, layout: str | None = None,
                 notes: Sequence[str] = ()):
        self.backend = backend
        self.source = source
        self.layout = layout or backend.layout
        self.notes = list(notes)  # what loading decided or guessed, for the report
        self.extra_checks: list = []  # CheckResults produced while loading (e.g. conversion-equivalence)

    @property
    def framework(self) -> str:
        return self.backend.framework

    def to_device(self, spec: str) -> ModelHandle:
        """Run the model on ``spec`` (cpu, cuda, cuda:N or auto; see ``xaiready.devices``); in place."""
        move = getattr(self.backend, "to_device", None)
        if move is None:
            from .errors import UsageError

            raise UsageError(f"a {self.framework} model cannot change device", hint="drop --device")
        self.notes.append(f"device: {move(spec)}")
        reference = getattr(self, "reference", None)  # a converted model's original runs beside it
        if reference is not None and reference is not self:
            reference.to_device(spec)
        return self

    @property
    def ops(self):
        """Where the backend keeps arrays during a method's passes (``backends.arrays``)."""
        from .backends.arrays import NUMPY_OPS

        return getattr(self.backend, "ops", NUMPY_OPS)

    @property
    def channel_axis(self) -> int:
        return 1 if self.layout == "NCHW" else -1

    def as_input(self, x: Any) -> np.ndarray:
        """A float NumPy batch from a NumPy array or a framework tensor; non-finite input is refused."""
        if is_torch_tensor(x):
            x = x.detach().cpu().numpy()
        elif hasattr(x, "numpy") and not isinstance(x, np.ndarray):
            x = x.numpy()
        arr = np.asarray(x)
        if arr.dtype.kind not in "fiub":
            raise InputError(f"input has dtype {arr.dtype}; a numeric array is needed")
        arr = arr.astype(np.float32, copy=False) if arr.dtype.kind != "f" else arr
        if not np.isfinite(arr).all():
            bad = int((~np.isfinite(arr)).sum())
            raise InputError(f"input contains {bad} NaN or infinite values",
                             hint="clean the input; explanations of non-finite inputs mean nothing")
        return arr

    # Thin delegation keeps methods away from backend details.
    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.backend.forward(x)

    def vjp(self, x: np.ndarray, target: Target, *, layers: Sequence[str] = (),
            input_grad: bool = True, contrast: bool = False) -> GradResult:
        """The backend's vjp; ``contrast`` asks for the runner-up class too where the backend can give
        it from the same forward (``GradResult.contrast`` stays None where it cannot)."""
        if contrast and getattr(self.backend, "supports_contrast", False):
            return self.backend.vjp(x, target, layers=layers, input_grad=input_grad, contrast=True)
        return self.backend.vjp(x, target, layers=layers, input_grad=input_grad)

    def attention(self, x: np.ndarray, target: Target):
        """The model's attention probabilities on ``x`` and their gradients (backends that can find them)."""
        find = getattr(self.backend, "attention", None)
        if find is None:
            from .errors import CapabilityError

            raise CapabilityError(f"attention maps cannot be read from a {self.framework} model",
                                  path=self.source.path, format=self.source.format,
                                  hint="attention rollout needs a PyTorch model (eager)")
        return find(x, target)

    def layers(self) -> LayerAccess:
        return self.backend.layers()

    def relu_override(self, mode: str):
        return self.backend.relu_override(mode)

    def session(self):
        """Keep the model prepared (e.g. eval mode) across many calls; restored on exit."""
        return self.backend.session()

    def resolve(self, target: Target, x: np.ndarray) -> Target:
        """Fix a target's data-dependent choices against this model's output on ``x``."""
        if getattr(target, "raw_output", False) and not target.resolved:
            # the output may be no tensor (a detector's list[dict]): the backend's pass resolves it
            return self.vjp(x, target, input_grad=False).target or target
        if target.framework_fn is not None:
            return target
        return target.resolve(self.forward(x), channel_axis=self.channel_axis)

    def __repr__(self) -> str:
        return f"ModelHandle({self.source.format}, {self.source.path!r}, framework={self.framework})"
