"""The CAM family: one class per channel-weighting rule over a layer's activation A and gradient G.

    map = ReLU( sum_c  w_c(A, G) * A_c )      at the layer's resolution   -> ``raw``
    values = minmax( upsample(map) )           at the input's resolution

Only ``weights`` differs between methods. Gradients go only to the layer (``input_grad=False``), so the
backward stops there and never fills parameter gradients. Layouts: the channel axis comes from the
handle (NCHW or NHWC), so the same code serves every backend.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

import numpy as np

from .._image_ops import normalize, spatial_size, upsample
from ..errors import CapabilityError
from ..readiness.layouts import Layout, candidates, to_maps
from ..targets import Target
from ._common import Prepared, attribution, contrast_of, prepare, resolved
from ._gating import measure, require
from .base import Attribution, Contrast, Method, register
from .gradient import GuidedBackprop, input_gradient, override_findings


def degenerate(raw: np.ndarray) -> list[str | None]:
    """Per sample: "all-zero", "constant" or None; measured before normalization can hide it."""
    flat = raw.reshape(len(raw), -1)
    return ["all-zero" if not f.any() else "constant" if f.min() == f.max() else None for f in flat]


def _only_reading(shape, input_hw, input_layout: str) -> Layout | None:
    """A layer nobody measured (``verify=False``): its only reading at this input size, or, for a 4-D
    map both ways, the input's own layout."""
    found = candidates(tuple(shape), input_hw, shape[0])
    if len(found) == 1:
        return found[0]
    return next((c for c in found if c.kind == input_layout), None)


# ---- the family ---------------------------------------------------------------------------------------------
class CAMMethod(Method):
    """Base of the CAM family; subclasses override ``weights`` only."""

    family: ClassVar[str] = "cam"
    requires: ClassVar[frozenset[str]] = frozenset({"forward", "gradient", "layers"})
    defaults: ClassVar[dict[str, Any]] = {"interpolation": "bilinear"}

    def weights(self, acts: np.ndarray, grads: np.ndarray) -> np.ndarray:
        """Channel weights, broadcastable to ``acts`` (N, C, h, w)."""
        raise NotImplementedError

    def __call__(self, handle, x, target: Target | None = None, *, layer: str | None = None,
                 verify: bool = True, contrast: bool = False, **options) -> Attribution:
        """``contrast=True`` also maps the runner-up class from the same forward (one more backward to
        the layer), for the health checks."""
        opts = self.options(options)
        contrast = contrast and self.contrast_from_layer
        with handle.session():
            prep = prepare(handle, x, target, resolve=False)  # the layer pass resolves it
            layer, layout = self.choose_layer(handle, prep, layer, verify)
            prep, raw, runner = self.raw_map(handle, prep, layer, layout, contrast=contrast)
            size = spatial_size(prep.x, handle.layout)
            up = upsample(raw, size, opts["interpolation"])
            values, info, warnings = self.combine(handle, prep, raw, up, opts)
            if runner is not None:
                runner = replace(runner, other=normalize(upsample(runner.other, size, opts["interpolation"])))
        flags = degenerate(raw)
        warnings = [*warnings, *(f"sample {i}: the raw {self.name} map is {f}, so the normalized map "
                                 "carries no information" for i, f in enumerate(flags) if f)]
        info = {**info, "degenerate": flags, "layer_shape": list(raw.shape[1:])}
        return attribution(self, handle, prep, values, {**opts, "layer": layer}, layer=layer, raw=raw,
                           info=info, warnings=warnings, contrast=runner)

    # Guided Grad-CAM's map needs guided backprop for the runner-up too: its check re-explains.
    contrast_from_layer: ClassVar[bool] = True

    def choose_layer(self, handle, prep, layer: str | None, verify: bool) -> tuple[str, Layout | None]:
        """The named layer (verified) or readiness's default layer, with its measured layout."""
        if verify:
            found = require(handle, prep.x, prep.target, self, layer)
        elif layer is None:
            found = measure(handle, prep.x, prep.target)
        else:
            return layer, None
        chosen = layer or found.default_layer
        if chosen is None:
            raise CapabilityError(f"{self.name} has no layer to use: {found.cam_reason}",
                                  path=handle.source.path, format=handle.source.format,
                                  hint="name one with --layer")
        measured = found.layout(chosen)
        return chosen, Layout.from_dict(measured) if measured else None

    def raw_map(self, handle, prep: Prepared, layer: str, layout: Layout | None, *,
                contrast: bool = False) -> tuple[Prepared, np.ndarray, Contrast | None]:
        """One pass to the layer only; returns ``prep`` with the target resolved, the ReLU'd map, and
        with ``contrast`` the runner-up class's raw map from the same forward.

        The activation is read through the layer's measured layout (an image map, or tokens whose
        prefix is dropped and whose grid is restored); an unverified layer gets its only reading."""
        res = handle.vjp(prep.x, prep.target, layers=[layer], input_grad=False, contrast=contrast)
        acts, grads = res.activations.get(layer), res.layer_grads.get(layer)
        if acts is None or grads is None:
            why = "never ran" if acts is None else "is not on the score's gradient path"
            raise CapabilityError(f"layer '{layer}' {why}", path=handle.source.path,
                                  format=handle.source.format, hint="`xaiready check` lists usable layers")
        layout = layout or _only_reading(acts.shape, spatial_size(prep.x, handle.layout), handle.layout)
        if layout is None:
            raise CapabilityError(f"layer '{layer}' has output shape {acts.shape}, which reads neither as an image "
                                  "map nor as tokens on the patch grid", path=handle.source.path,
                                  format=handle.source.format, hint="`xaiready check` lists the layers and layouts")
        acts = to_maps(acts, layout)
        other = res.contrast.layer_grads.get(layer) if res.contrast is not None else None
        runner = None if other is None else contrast_of(res, self.cam(acts, to_maps(other, layout)))
        return resolved(prep, res), self.cam(acts, to_maps(grads, layout)), runner

    def cam(self, acts: np.ndarray, grads: np.ndarray) -> np.ndarray:
        """ReLU(sum_c w_c A_c) at the layer's resolution, from (N, C, h, w) maps."""
        return np.maximum((self.weights(acts, grads) * acts).sum(1), 0)

    def combine(self, handle, prep, raw, up, opts) -> tuple[np.ndarray, dict, list[str]]:
        """The final values from the upsampled map (Guided Grad-CAM multiplies in guided backprop)."""
        return normalize(up), {}, []


@register
class GradCAM(CAMMethod):
    """w_c = mean over space of G_c (Selvaraju et al. 2017, https://arxiv.org/abs/1610.02391)."""

    name = "gradcam"

    def weights(self, acts, grads):
        return grads.mean(axis=(2, 3), keepdims=True)


@register
class GradCAMPlusPlus(CAMMethod):
    """Grad-CAM++ (Chattopadhay et al. 2018, https://arxiv.org/abs/1710.11063), in its common
    closed form with exp-score higher derivatives expressed through powers of G (as pytorch-grad-cam)."""

    name = "gradcam++"

    def weights(self, acts, grads):
        g2 = grads * grads
        alpha = g2 / (2 * g2 + acts.sum(axis=(2, 3), keepdims=True) * g2 * grads + 1e-6)
        alpha = np.where(grads != 0, alpha, 0)
        return (np.maximum(grads, 0) * alpha).sum(axis=(2, 3), keepdims=True)


@register
class HiResCAM(CAMMethod):
    """Element-wise G * A, summed over channels (Draelos & Carin 2020, https://arxiv.org/abs/2011.08891)."""

    name = "hirescam"

    def weights(self, acts, grads):
        return grads


@register
class LayerCAM(CAMMethod):
    """Element-wise ReLU(G) * A (Jiang et al. 2021, https://doi.org/10.1109/TIP.2021.3089943)."""

    name = "layercam"

    def weights(self, acts, grads):
        return np.maximum(grads, 0)


@register
class XGradCAM(CAMMethod):
    """w_c = sum(G_c * A_c) / sum(A_c) (Fu et al. 2020, https://arxiv.org/abs/2008.02312)."""

    name = "xgradcam"

    def weights(self, acts, grads):
        return (grads * acts / (acts.sum(axis=(2, 3), keepdims=True) + 1e-7)).sum(axis=(2, 3), keepdims=True)


@register
class GuidedGradCAM(GradCAM):
    """Guided backprop times the upsampled raw Grad-CAM map (Selvaraju et al. 2017); input-shaped."""

    name = "guided-gradcam"
    contrast_from_layer = False

    def combine(self, handle, prep, raw, up, opts):
        with handle.relu_override(GuidedBackprop.mode) as stats:
            guided = input_gradient(handle, prep.x, prep.target)
        info, warnings = override_findings(self.name, stats)
        cam = np.expand_dims(up, handle.channel_axis % prep.x.ndim)
        return guided * cam, info, warnings
