"""The caller's model and input are as they were after every method, also after an error."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import xaiready as xr
from xaiready.api import as_handle
from xaiready.errors import UsageError
from xaiready.methods import load_methods
from xaiready.targets import Class, Custom
from xaiready.testing import zoo

from .conftest import build

# Methods a CNN can serve (attention rollout needs a transformer; its own tests cover non-mutation).
OWN_METHODS = [n for n in load_methods().names() if load_methods().get(n).family in ("gradient", "cam")
               and "attention" not in load_methods().get(n).requires]


def _state(model):
    return {**as_handle(model).backend.state_snapshot(),
            "params": [p.detach().clone() for p in model.parameters()]}


def _same(before, after):
    assert {k: v for k, v in before.items() if k != "params"} == {k: v for k, v in after.items() if k != "params"}
    assert all(torch.equal(a, b) for a, b in zip(before["params"], after["params"], strict=True))


def _relu_is_plain():
    """No override left behind: a ReLU's gradient is the ordinary one (zero for negative inputs)."""
    t = torch.tensor([-1.0, 2.0], requires_grad=True)
    (g,) = torch.autograd.grad(F.relu(t).sum() * -1, t)
    return g.tolist() == [0.0, -1.0]


@pytest.mark.parametrize("method", OWN_METHODS)
def test_model_and_input_unchanged(x, method):
    model = build(zoo.HealthyCNN).train()  # training mode must come back as training mode
    before, x_copy = _state(model), x.copy()
    opts = {"n_steps": 4} if method == "integrated-gradients" else {"n_samples": 2} if "grad" in method and \
        method in ("smoothgrad", "smoothgrad-sq", "vargrad") else {}
    xr.explain(model, x, method, Class(0), **opts)
    _same(before, _state(model))
    assert model.training and all(m.training for m in model.modules())
    np.testing.assert_array_equal(x, x_copy)
    assert _relu_is_plain()


class Boom(RuntimeError):
    pass


def _explode(out):
    raise Boom("target failed mid-pass")


@pytest.mark.parametrize("method", ["saliency", "guided-backprop", "gradcam", "guided-gradcam",
                                    "integrated-gradients", "smoothgrad"])
def test_unchanged_after_an_error_mid_pass(x, method):
    model = build(zoo.FunctionalReluCNN).train()
    before = _state(model)
    with pytest.raises(Boom):
        xr.explain(model, x, method, Custom(_explode), layer="conv2" if "cam" in method else None, verify=False)
    _same(before, _state(model))
    assert _relu_is_plain()


def test_unchanged_after_a_usage_error(x):
    model = build(zoo.HealthyCNN)
    before = _state(model)
    with pytest.raises(UsageError):
        xr.explain(model, x, "gradcam", Class(0), layer="nope")
    with pytest.raises(UsageError):
        xr.explain(model, x, "integrated-gradients", Class(0), integration="simpson")
    _same(before, _state(model))
