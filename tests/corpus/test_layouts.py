"""Layouts measured per layer on real transformers and CNNs, the default CAM layer and its reason,
and Grad-CAM on token layers against pytorch-grad-cam with the hand-written ``reshape_transform``
its tutorials give for each family."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

import xaiready as xr
from xaiready.targets import Class

from . import architectures as A


def _tokens(prefix, h, w):
    def reshape(t):  # the pytorch-grad-cam tutorial's transform: drop prefix tokens, restore the grid
        return t[:, prefix:, :].reshape(t.size(0), h, w, t.size(2)).permute(0, 3, 1, 2)
    return reshape


def _nhwc(t):
    return t.permute(0, 3, 1, 2)


def _logits(model):
    class Logits(torch.nn.Module):  # pytorch-grad-cam indexes the output tensor
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x):
            out = self.model(x)
            return out.logits if hasattr(out, "logits") else out
    return Logits().eval()


# name -> (default layer, its layout kind, prefix tokens, grid, reshape_transform for the anchor)
CASES = {
    "timm-vit_tiny": ("blocks.11.norm1", "tokens", 1, (2, 2), _tokens(1, 2, 2)),
    "timm-deit_tiny_distilled": ("blocks.11.norm1", "tokens", 2, (2, 2), _tokens(2, 2, 2)),
    "timm-vit_reg4": ("blocks.1.norm1", "tokens", 5, (4, 4), _tokens(5, 4, 4)),
    "tv-vit_b_16": ("encoder.layers.encoder_layer_11.ln_1", "tokens", 1, (2, 2), _tokens(1, 2, 2)),
    "hf-vit": ("vit.layers.1.layernorm_before", "tokens", 1, (4, 4), _tokens(1, 4, 4)),
    "hf-swin": ("swin.layernorm", "tokens", 0, (4, 4), _tokens(0, 4, 4)),
    # Pooled tokens (no class-token readout): the last MLP norm's patch tokens reach the score.
    "timm-beit_pooled": ("blocks.1.norm2", "tokens", 1, (4, 4), _tokens(1, 4, 4)),
    "timm-swin_tiny": ("norm", "NHWC", 0, (7, 7), _nhwc),
    "tv-convnext_tiny": ("features", "NCHW", 0, (2, 2), None),
    "timm-mobilevit_xxs": ("final_conv", "NCHW", 0, (2, 2), None),
}
FAST = {"timm-vit_tiny", "timm-vit_reg4", "timm-beit_pooled", "hf-vit", "hf-swin", "tv-convnext_tiny"}
A.BUILDERS.setdefault("timm-beit_pooled", A._timm("beit_base_patch16_224", size=32, img_size=32, patch_size=8, depth=2,
                                                  embed_dim=64, num_heads=2))
A.BUILDERS.setdefault("timm-vit_reg4", A._timm("vit_tiny_patch16_224", size=64, img_size=64, patch_size=16,
                                               reg_tokens=4, class_token=True, depth=2))


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n in FAST else (pytest.mark.slow,)) for n in CASES])
def test_default_layer_layout_and_gradcam_parity(name):
    layer, kind, prefix, grid, reshape = CASES[name]
    model, shape = A.build(name)
    x = A.example_input(shape)
    report = xr.check(model, x).to_dict()
    assert report["verdict"] == "full"
    assert report["cam"]["default_layer"] == layer, report["cam"].get("default_reason")
    layout = report["cam"]["layouts"][layer]
    assert (layout["kind"], layout["prefix"], tuple(layout["grid"])) == (kind, prefix, grid), layout
    assert report["cam"]["default_reason"]
    # every verified layer has an established spatial reading; attention internals never do
    for verified in report["cam"]["layers"]:
        assert report["cam"]["layouts"][verified]["kind"] in ("NCHW", "NHWC", "tokens")

    k = int(np.argmax(_logits(model)(torch.tensor(x)).detach().numpy()[0]))
    ours = xr.explain(model, x, "gradcam", Class(k), sanity="off")
    assert ours.layer == layer
    with GradCAM(model=_logits(model), target_layers=[model.get_submodule(layer)], reshape_transform=reshape) as cam:
        ref = cam(input_tensor=torch.tensor(x), targets=[ClassifierOutputTarget(k)])
    np.testing.assert_allclose(ours.values, ref, atol=1e-5)


def test_attention_internals_and_position_tables_are_never_cam_layers():
    model, shape = A.build("hf-swin")
    layouts = xr.check(model, A.example_input(shape)).to_dict()["cam"]["layouts"]
    bias = [n for n in layouts if n.endswith("relative_position_bias")]
    assert bias and all(layouts[n]["kind"] == "none" and "do not change" in layouts[n]["evidence"] for n in bias)
    model, shape = A.build("timm-vit_tiny")
    layouts = xr.check(model, A.example_input(shape)).to_dict()["cam"]["layouts"]
    assert all(layouts[n]["kind"] == "none" for n in layouts if n.endswith(("attn.q_norm", "attn.k_norm")))


class _TooManyPrefixTokens(torch.nn.Module):
    """A patch-embedding convolution, then a token body with 10 memory tokens prepended: more prefix
    tokens than any layout reading allows, so only the stem reads as a map."""

    def __init__(self):
        super().__init__()
        self.patch = torch.nn.Conv2d(3, 16, 8, stride=8)
        self.memory = torch.nn.Parameter(torch.randn(1, 10, 16))
        self.blocks = torch.nn.Sequential(*[torch.nn.Sequential(torch.nn.LayerNorm(16), torch.nn.Linear(16, 16),
                                                                torch.nn.GELU()) for _ in range(3)])
        self.head = torch.nn.Linear(16, 5)

    def forward(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.memory.expand(len(x), -1, -1), tokens], 1)
        return self.head(self.blocks(tokens).mean(1))


def test_stem_alone_is_gradient_only_with_the_reason():
    torch.manual_seed(0)
    report = xr.check(_TooManyPrefixTokens().eval(), np.random.default_rng(0).standard_normal((1, 3, 32, 32))
                      .astype(np.float32)).to_dict()
    assert report["verdict"] == "gradient-only"
    assert "only the stem" in report["cam"]["reason"] and "patch" in report["cam"]["reason"]


def test_square_channels_are_told_apart_by_a_second_size():
    """(B, 8, 8, 8) reads as NCHW or NHWC at one size; the larger input shows which axes follow."""
    class ChannelsLast(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, stride=4, padding=1)
            self.nhwc = torch.nn.Identity()
            self.head = torch.nn.Linear(8, 3)

        def forward(self, x):
            y = self.nhwc(self.conv(x).permute(0, 2, 3, 1))  # (B, 8, 8, 8) at 32 x 32
            return self.head(y.mean((1, 2)))

    torch.manual_seed(0)
    report = xr.check(ChannelsLast().eval(), np.random.default_rng(0).standard_normal((1, 3, 32, 32))
                      .astype(np.float32)).to_dict()
    layouts = report["cam"]["layouts"]
    assert layouts["nhwc"]["kind"] == "NHWC" and layouts["conv"]["kind"] == "NCHW"
    assert "follows the input" in layouts["nhwc"]["evidence"]


def test_capture_is_the_layer_output_before_later_in_place_ops():
    """torchvision's BasicBlock runs an in-place ReLU on bn1's output and `out += identity` on bn2's."""
    from xaiready.api import as_handle

    model, shape = A.build("tv-resnet18")
    x = A.example_input(shape)
    res = as_handle(model).vjp(x, Class(0), layers=["layer1.0.bn1", "layer1.0.bn2"])
    block = model.layer1[0]
    with torch.no_grad():
        stem = model.maxpool(model.relu(model.bn1(model.conv1(torch.tensor(x)))))
        bn1 = block.bn1(block.conv1(stem))
        bn2 = block.bn2(block.conv2(torch.relu(bn1)))
    np.testing.assert_allclose(res.activations["layer1.0.bn1"], bn1.numpy(), atol=1e-5)
    np.testing.assert_allclose(res.activations["layer1.0.bn2"], bn2.numpy(), atol=1e-5)
    assert (res.activations["layer1.0.bn1"] < 0).any()  # not the ReLU'd tensor


class _SharedBlock(torch.nn.Module):
    """One conv block applied twice: its hook fires twice per forward."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.block = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU())
        self.head = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4))

    def forward(self, x):
        return self.head(self.block(self.block(self.stem(x))))


def test_a_module_called_twice_is_reported_and_each_call_can_be_chosen():
    model = _SharedBlock().eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    report = xr.check(model, x)
    assert report.cam["repeated"]["block"] == 2
    # Hand Grad-CAM at each call's output.
    outs = []
    xt = torch.from_numpy(x)
    first = model.block(model.stem(xt))
    second = model.block(first)
    score = model.head(second)[:, 1].sum()
    for act in (first, second):
        (g,) = torch.autograd.grad(score, act, retain_graph=True)
        cam = torch.relu((g.mean((2, 3), keepdim=True) * act).sum(1)).detach().numpy()
        outs.append(cam)
    for k in (0, 1):
        ours = xr.explain(model, x, "gradcam", Class(1), layer=f"block#{k}", sanity="off")
        np.testing.assert_allclose(ours.raw, outs[k], rtol=1e-5, atol=1e-6)
    assert not np.allclose(outs[0], outs[1])


def test_a_token_count_that_reads_two_ways_is_settled_by_a_second_size():
    """17 tokens at 32 x 32 fit 1 + 4x4 (stride 8) and 8 + 3x3 (stride 10): ambiguous at one size, so
    no layout is established; at 40 x 40 the same layer has 26 tokens, which only 1 + 5x5 follows."""
    from xaiready.readiness.layouts import Observation, candidates, measure

    readings = {(c.prefix, c.grid) for c in candidates((2, 17, 32), (32, 32), 2)}
    assert {(1, (4, 4)), (8, (3, 3))} <= readings
    first = {"blocks.1.norm1": Observation((2, 17, 32), 1.0)}
    alone = measure(first, (2, 3, 32, 32), None, None, (2, 3))["blocks.1.norm1"]
    assert alone.kind == "none" and alone.evidence.startswith("ambiguous")
    second = {"blocks.1.norm1": Observation((2, 26, 32), 2.0)}
    settled = measure(first, (2, 3, 32, 32), second, (2, 3, 40, 40), (2, 3))["blocks.1.norm1"]
    assert (settled.kind, settled.prefix, settled.grid) == ("tokens", 1, (4, 4)), settled.evidence
