"""Guided backprop and deconvnet override ReLU at the function level, and say what they could not."""

import numpy as np
import pytest
import torch
import torch.nn as nn
from captum.attr import GuidedBackprop

import xaiready as xr
from xaiready.targets import Class
from xaiready.testing import zoo

from .conftest import SiLUCNN, assert_close, build

# Captum announces its own (module-level) ReLU hooks on every call.
pytestmark = pytest.mark.filterwarnings("ignore:Setting backward hooks:UserWarning")


def _reference_guided(model, x, k):
    """Guided backprop written out by hand: every torch.relu replaced by a guided autograd.Function."""

    class Guided(torch.autograd.Function):
        @staticmethod
        def forward(ctx, t):
            out = t.clamp(min=0)
            ctx.save_for_backward(out)
            return out

        @staticmethod
        def backward(ctx, g):
            (out,) = ctx.saved_tensors
            return g.clamp(min=0) * (out > 0)

    m = model
    xt = torch.tensor(x, requires_grad=True)
    h = Guided.apply(m.conv1(xt))
    h = Guided.apply(m.conv2(h))
    out = m.head(h.mean((2, 3)))
    (g,) = torch.autograd.grad(out[:, k].sum(), xt)
    return g.numpy()


def test_guided_backprop_covers_functional_relu(x):
    model = build(zoo.FunctionalReluCNN)
    ours = xr.explain(model, x, "guided-backprop", Class(2))
    plain = xr.explain(model, x, "gradient", Class(2))
    captum = GuidedBackprop(model).attribute(torch.tensor(x, requires_grad=True), target=2).detach().numpy()
    # Captum hooks nn.ReLU modules only: on F.relu/torch.relu it silently returns the plain gradient ...
    assert_close(captum, plain.values)
    # ... ours overrides both calls and differs from the plain gradient, matching the hand-written rule.
    assert ours.info["relu_override"]["overridden"] == 2 == ours.info["relu_override"]["relu_calls"]
    assert np.abs(ours.values - plain.values).max() > 0.1 * np.abs(plain.values).max()
    assert_close(ours.values, _reference_guided(model, x, 2))
    assert not ours.warnings


def test_in_place_relu_is_overridden(x):
    model = build(zoo.HealthyCNN)
    for m in model.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = True
    ours = xr.explain(model, x, "guided-backprop", Class(0))
    assert ours.info["relu_override"]["overridden"] == 2
    ref = GuidedBackprop(model).attribute(torch.tensor(x, requires_grad=True), target=0).detach().numpy()
    assert_close(ours.values, ref)


def test_not_overridable_activations_are_reported(x):
    ours = xr.explain(build(SiLUCNN), x, "guided-backprop", Class(1))
    stats = ours.info["relu_override"]
    assert stats["overridden"] == 1 and stats["not_overridable"] == {"silu": 1}
    assert any("silu x1" in w and "cannot be overridden" in w for w in ours.warnings)


def test_model_without_relu_warns_that_nothing_was_overridden(x):
    class NoRelu(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.head = nn.Linear(4, 3)

        def forward(self, t):
            return self.head(torch.tanh(self.conv(t)).mean((2, 3)))

    model = build(NoRelu)
    ours = xr.explain(model, x, "deconvnet", Class(1))
    assert ours.info["relu_override"]["overridden"] == 0
    assert any("no ReLU was overridden" in w for w in ours.warnings)
    assert_close(ours.values, xr.explain(model, x, "gradient", Class(1)).values)


def test_smoothgrad_of_guided_backprop_counts_every_pass(x):
    model = build(zoo.FunctionalReluCNN)
    ours = xr.explain(model, x, "smoothgrad", Class(2), base="guided-backprop", n_samples=3, batch_size=2)
    # 2 samples x 3 copies, 2 ReLU calls per row, in ceil(6 / 2) = 3 passes of 2 rows each
    assert ours.info["relu_override"]["overridden"] == 6
    assert ours.info["base"] == "guided-backprop"
