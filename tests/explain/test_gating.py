"""Capability gating: refuse what the model cannot give, quoting the readiness finding."""

import pytest
import torch

import xaiready as xr
from xaiready.api import as_handle
from xaiready.errors import CapabilityError
from xaiready.methods import _gating, load_methods
from xaiready.methods.base import Method
from xaiready.targets import Class
from xaiready.testing import zoo

from .conftest import build


@pytest.fixture
def black_box_method():
    """A black-box method registered for the test only, so the hint can be checked deterministically."""
    methods = load_methods()

    class Probe(Method):
        name, family, requires = "test-blackbox", "black_box", frozenset({"forward"})

    methods.register(Probe.name, Probe)
    yield Probe.name
    methods._items.pop(Probe.name)


@pytest.mark.parametrize("method", ["saliency", "integrated-gradients", "smoothgrad", "gradcam"])
def test_gradient_methods_refused_on_inference_only_model(x, method, black_box_method):
    model = build(zoo.DetachBetweenBlocks)
    with pytest.raises(CapabilityError) as info:
        xr.explain(model, x, method, Class(0))
    line = info.value.one_line()
    assert "needs input gradients" in line and "'missing'" in line and "detach at '(root)'" in line
    assert "inference-only" in line and black_box_method in line
    assert info.value.exit_code == 6 and "\n" not in line


def test_cam_refused_on_torchscript_but_gradients_work(x):
    scripted = torch.jit.script(build(zoo.HealthyCNN))
    handle = as_handle(scripted)
    with pytest.raises(CapabilityError) as info:
        xr.explain(handle, x, "gradcam", Class(0))
    line = info.value.one_line()
    assert "hookable internal layer" in line and "TorchScript" in line
    assert "gradient methods work: " in line and "saliency" in line
    assert xr.explain(handle, x, "saliency", Class(0)).values.shape == x.shape


def test_gating_is_measured_once_per_handle_and_shape(x):
    handle = as_handle(build(zoo.HealthyCNN))
    xr.explain(handle, x, "gradcam", Class(0), sanity="off")  # health checks re-explain other targets
    model = handle.backend.module
    key_count = len(_gating._CACHE[model])
    xr.explain(handle, x, "saliency", Class(0), sanity="off")
    xr.explain(model, x, "layercam", Class(1), sanity="off")  # a new handle on the same module: cached too
    assert len(_gating._CACHE[model]) == key_count == 1


def test_unknown_layer_and_method_are_usage_errors(x):
    from xaiready.errors import UsageError

    model = build(zoo.HealthyCNN)
    with pytest.raises(UsageError, match="no layer 'featurez'"):
        xr.explain(model, x, "gradcam", Class(0), layer="featurez")
    with pytest.raises(UsageError) as info:
        xr.explain(model, x, "gradcm")
    assert "did you mean gradcam" in info.value.one_line()
    with pytest.raises(UsageError, match="no option n_step"):
        xr.explain(model, x, "integrated-gradients", n_step=3)


def test_layer_without_spatial_extent_is_refused(x):
    with pytest.raises(CapabilityError, match="layer 'head'"):
        xr.explain(build(zoo.HealthyCNN), x, "gradcam", Class(0), layer="head")
