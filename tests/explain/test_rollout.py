"""Gradient-weighted attention rollout (Chefer et al. 2021): a hand derivation on a tiny ViT, the same
model written with softmax, SDPA and nn.MultiheadAttention, and real timm / torchvision / Hugging Face
transformers with random weights. Attention is found by measurement, so every family must be found."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import xaiready as xr
from xaiready.api import as_handle
from xaiready.errors import CapabilityError, UsageError
from xaiready.targets import Class

from .conftest import assert_close, snapshot


# ---- a tiny ViT: 16x16 input, 4x4 patches, a class token, 2 blocks ---------------------------------------
class TinyBlock(nn.Module):
    def __init__(self, dim, heads, attention):
        super().__init__()
        self.heads, self.attention = heads, attention
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.kept = None  # a list: the test's own record of the probabilities (explicit softmax only)
        self.mha = None

    def attend(self, x):
        b, n, c = x.shape
        if self.attention == "mha":
            return self.mha(x, x, x, need_weights=False)[0]
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        if self.attention == "sdpa":
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = ((q @ k.transpose(-2, -1)) * (c // self.heads) ** -0.5).softmax(dim=-1)
            if self.kept is not None:
                self.kept.append(attn)
            out = attn @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, c))

    def forward(self, x):
        x = x + self.attend(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    def __init__(self, attention="softmax", dim=16, heads=2, classes=5):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, dim))
        self.pos = nn.Parameter(0.5 * torch.randn(1, 17, dim))
        self.blocks = nn.ModuleList([TinyBlock(dim, heads, attention) for _ in range(2)])
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, classes)

    def forward(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(len(x), -1, -1), tokens], 1) + self.pos
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])


def tiny(attention="softmax"):
    torch.manual_seed(0)
    model = TinyViT("softmax").eval()
    for block in model.blocks:
        block.attention = attention
        if attention == "mha":  # the same weights, as torchvision's ViT holds them
            block.mha = nn.MultiheadAttention(16, 2, batch_first=True)
            with torch.no_grad():
                block.mha.in_proj_weight.copy_(block.qkv.weight)
                block.mha.in_proj_bias.copy_(block.qkv.bias)
                block.mha.out_proj.weight.copy_(block.proj.weight)
                block.mha.out_proj.bias.copy_(block.proj.bias)
    return model.eval()


def by_hand(model, x, k):
    """A and dA from the model's own record and autograd; the rollout formula in NumPy."""
    kept = []
    for block in model.blocks:
        block.kept = kept
    try:
        out = model(torch.as_tensor(x))
        probs = list(kept)
        grads = torch.autograd.grad(out[:, k].sum(), probs)
    finally:
        for block in model.blocks:
            block.kept = None
    r = np.tile(np.eye(17), (len(x), 1, 1))
    for a, g in zip(probs, grads, strict=True):
        a, g = a.detach().double().numpy(), g.double().numpy()
        abar = np.clip(g * a, 0, None).mean(axis=1)
        r = r + np.einsum("bij,bjk->bik", abar, r)
    return r[:, 0, 1:].reshape(len(x), 4, 4)


@pytest.fixture
def x16(rng):
    return rng.standard_normal((2, 3, 16, 16)).astype(np.float32)


def test_rollout_matches_the_hand_derivation(x16):
    model = tiny()
    before = snapshot(model)
    a = xr.explain(model, x16, "attention-rollout", Class(3), sanity="off")
    assert snapshot(model) == before  # no hook left, flags and grads untouched
    expected = by_hand(model, x16, 3)
    assert a.raw.shape == (2, 4, 4) and a.values.shape == (2, 16, 16)
    assert_close(a.raw, expected, rtol=1e-5)
    assert np.abs(a.raw - expected).max() <= 1e-5
    assert a.info["prefix"] == 1 and a.info["grid"] == [4, 4] and a.info["n_layers"] == 2
    assert a.info["attention_sites"] == ["softmax #1 in blocks.0", "softmax #2 in blocks.1"]
    assert a.info["readout_tokens"] == [[0], [0]]
    assert a.values.min() == 0 and a.values.max() == 1
    # a later start skips the first layer; another class gives another map
    later = xr.explain(model, x16, "attention-rollout", Class(3), sanity="off", start_layer=1)
    assert np.abs(later.raw - a.raw).max() > 1e-4
    other = xr.explain(model, x16, "attention-rollout", Class(0), sanity="off")
    assert_close(other.raw, by_hand(model, x16, 0), rtol=1e-5)


@pytest.mark.parametrize("attention", ["sdpa", "mha"])
def test_sdpa_and_multihead_attention_give_the_softmax_result(x16, attention):
    reference = xr.explain(tiny("softmax"), x16, "attention-rollout", Class(2), sanity="off")
    model = tiny(attention)
    with torch.no_grad():
        assert_close(model(torch.as_tensor(x16)).numpy(), reference.output, rtol=1e-5)
    a = xr.explain(model, x16, "attention-rollout", Class(2), sanity="off")
    assert_close(a.raw, reference.raw, rtol=1e-5)
    assert_close(a.output, reference.output, rtol=1e-5)  # the recomputed attention changes no output
    kind = {"sdpa": "scaled_dot_product_attention", "mha": "multi_head_attention_forward"}[attention]
    where = {"sdpa": "blocks.{}", "mha": "blocks.{}.mha"}[attention]
    assert a.info["attention_sites"] == [f"{kind} #{i + 1} in {where.format(i)}" for i in range(2)]


# ---- real transformers, random weights ----------------------------------------------------------------
def _timm(name, **kw):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, depth=2, num_classes=5, **kw).eval()
    return model, len(model.blocks)


def _torchvision():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                                 hidden_dim=32, mlp_dim=64, num_classes=5).eval()
    nn.init.normal_(model.heads.head.weight, std=0.1)  # torchvision zero-initialises the head: no gradient
    return model, len(model.encoder.layers)


def _hf(impl):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=64, num_labels=5)
    model = transformers.ViTForImageClassification._from_config(config, attn_implementation=impl).eval()
    return model, config.num_hidden_layers


CASES = {
    "timm-vit": (lambda: _timm("vit_tiny_patch16_224", img_size=32), 32, 1, [2, 2], "scaled_dot_product"),
    "timm-deit-distilled": (lambda: _timm("deit_tiny_distilled_patch16_224", img_size=32), 32, 2, [2, 2],
                            "scaled_dot_product"),
    "timm-registers": (lambda: _timm("vit_small_patch14_reg4_dinov2", img_size=56, embed_dim=48, num_heads=2),
                       56, 5, [4, 4], "scaled_dot_product"),
    "torchvision-vit": (_torchvision, 32, 1, [4, 4], "multi_head_attention_forward"),
    "hf-vit-eager": (lambda: _hf("eager"), 32, 1, [4, 4], "softmax"),
    "hf-vit-sdpa": (lambda: _hf("sdpa"), 32, 1, [4, 4], "scaled_dot_product"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_real_vision_transformers(case, rng):
    build, size, prefix, grid, call = CASES[case]
    model, n_blocks = build()
    x = rng.standard_normal((2, 3, size, size)).astype(np.float32)
    before = snapshot(model)
    a = xr.explain(model, x, "attention-rollout", Class(1), sanity="off", verify=False)
    assert snapshot(model) == before
    sites = a.info["attention_sites"]
    assert len(sites) == n_blocks and all(s.startswith(call) for s in sites), sites
    assert a.info["prefix"] == prefix and a.info["grid"] == grid
    assert a.raw.shape == (2, *grid) and a.values.shape == (2, size, size)
    assert np.isfinite(a.raw).all() and all(np.ptp(m) > 0 for m in a.raw)
    assert a.info["readout_tokens"] == ([[0, 1]] * 2 if case == "timm-deit-distilled" else [[0]] * 2)
    with torch.no_grad():
        own = model(torch.as_tensor(x))
    own = getattr(own, "logits", own).numpy()
    assert np.abs(a.output - own).max() <= 1e-5


def test_gated_and_health_checked_like_other_methods(rng):
    model, _ = _timm("vit_tiny_patch16_224", img_size=32)
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    a = xr.explain(model, x, "attention-rollout")  # verify and cheap health checks on
    assert {h["name"] for h in a.info["health"]} >= {"map-values", "target-sensitivity"}
    assert a.family == "cam" and a.layer is None
    with pytest.raises(UsageError, match="takes no layer"):
        xr.explain(model, x, "attention-rollout", layer="blocks.0", sanity="off")
    with pytest.raises(UsageError, match="start_layer"):
        xr.explain(model, x, "attention-rollout", start_layer=2, sanity="off")


def test_a_cnn_has_no_attention(rng):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5).eval()
    x = rng.standard_normal((1, 3, 32, 32)).astype(np.float32)
    before = snapshot(model)
    with pytest.raises(CapabilityError, match=r"no attention probabilities \(B, heads, N, N\)"):
        xr.explain(model, x, "attention-rollout", sanity="off")
    assert snapshot(model) == before
    assert as_handle(model).attention(x, Class(0)).probs == []


@pytest.mark.parametrize("case", ["plain", "bool-mask", "additive-mask", "causal", "scale", "gqa"])
def test_explicit_attention_equals_torch_sdpa(case):
    from xaiready.backends.torch_attention import _explicit_sdpa

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 6, 8, generator=g) for _ in range(3))
    kw = {"bool-mask": {"attn_mask": (torch.rand(6, 6, generator=g) > 0.3) | torch.eye(6, dtype=torch.bool)},
          "additive-mask": {"attn_mask": torch.randn(2, 1, 6, 6, generator=g)},
          "causal": {"is_causal": True}, "scale": {"scale": 0.3}, "gqa": {"enable_gqa": True}}.get(case, {})
    if case == "gqa":
        k, v = k[:, :2], v[:, :2]
    out, probs = _explicit_sdpa(q, k, v, **kw)
    assert_close(out.numpy(), F.scaled_dot_product_attention(q, k, v, **kw).numpy(), rtol=1e-5)
    assert probs.shape == (2, 4, 6, 6) and torch.allclose(probs.sum(-1), torch.ones(()))


def test_multihead_attention_still_returns_the_weights_it_was_asked_for(rng):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()

    class Uses(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = mha

        def forward(self, x):  # (B, 5, 8) tokens -> the weights feed the output
            out, w = self.mha(x, x, x, need_weights=True, average_attn_weights=True)
            return out[:, 0] + w[:, 0, :].sum(-1, keepdim=True)

    from xaiready.backends.torch_attention import attention_vjp

    model = Uses().eval()
    x = rng.standard_normal((2, 5, 8)).astype(np.float32)
    res = attention_vjp(as_handle(model).backend, x, Class(0))
    with torch.no_grad():
        assert_close(res.output, model(torch.as_tensor(x)).numpy(), rtol=1e-5)
    assert [p.shape for p in res.probs] == [(2, 2, 5, 5)] and res.sites == ["multi_head_attention_forward #1 in mha"]
