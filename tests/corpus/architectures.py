"""Real architectures that none of us wrote, built at random weights and small inputs (no download).

Each builder returns ``(model, input_shape)``. Inputs are small so the whole corpus runs on a CPU;
every architecture keeps its real structure (stages, attention, norms, heads).
"""

from __future__ import annotations

import os

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CLASSES = 10


def _tv(name, size=64, **kw):
    def build():
        import torchvision

        return getattr(torchvision.models, name)(weights=None, num_classes=CLASSES, **kw), (1, 3, size, size)
    return build


def _timm(name, size=64, **kw):
    def build():
        import timm

        return timm.create_model(name, pretrained=False, num_classes=CLASSES, **kw), (1, 3, size, size)
    return build


def _hf(config_name, model_name, size=32, **kw):
    def build():
        import transformers

        config = getattr(transformers, config_name)(num_labels=CLASSES, **kw)
        return getattr(transformers, model_name)(config), (1, 3, size, size)
    return build


_SMALL_VIT = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64)

BUILDERS = {
    # torchvision CNNs
    "tv-resnet18": _tv("resnet18"),
    "tv-mobilenet_v3_small": _tv("mobilenet_v3_small"),
    "tv-mobilenet_v2": _tv("mobilenet_v2"),
    "tv-efficientnet_b0": _tv("efficientnet_b0"),
    "tv-regnet_y_400mf": _tv("regnet_y_400mf"),
    "tv-convnext_tiny": _tv("convnext_tiny"),
    "tv-densenet121": _tv("densenet121"),
    "tv-shufflenet_v2_x0_5": _tv("shufflenet_v2_x0_5"),
    "tv-squeezenet1_1": _tv("squeezenet1_1"),
    "tv-mnasnet0_5": _tv("mnasnet0_5"),
    # torchvision transformers
    "tv-vit_b_16": _tv("vit_b_16", size=32, image_size=32),
    "tv-swin_t": _tv("swin_t"),
    # timm
    "timm-resnet18": _timm("resnet18"),
    "timm-efficientnet_b0": _timm("efficientnet_b0"),
    "timm-convnext_atto": _timm("convnext_atto"),
    "timm-regnetx_002": _timm("regnetx_002"),
    "timm-mobilevit_xxs": _timm("mobilevit_xxs"),
    "timm-vit_tiny": _timm("vit_tiny_patch16_224", size=32, img_size=32),
    "timm-deit_tiny_distilled": _timm("deit_tiny_distilled_patch16_224", size=32, img_size=32),
    "timm-swin_tiny": _timm("swin_tiny_patch4_window7_224", size=224),
    # Hugging Face image classifiers (they return a ModelOutput)
    "hf-vit": _hf("ViTConfig", "ViTForImageClassification", **_SMALL_VIT),
    "hf-convnext": _hf("ConvNextConfig", "ConvNextForImageClassification", size=64, hidden_sizes=[8, 16, 32, 64],
                       depths=[1, 1, 1, 1]),
    "hf-resnet": _hf("ResNetConfig", "ResNetForImageClassification", size=64, hidden_sizes=[8, 16, 32, 64],
                     depths=[1, 1, 1, 1], embedding_size=8),
    "hf-swin": _hf("SwinConfig", "SwinForImageClassification", size=32, image_size=32, patch_size=4, embed_dim=16,
                   depths=[1, 1], num_heads=[1, 2], window_size=4),
}

CNNS = [n for n in BUILDERS if not any(t in n for t in ("vit", "swin", "deit", "mobilevit"))]


def build(name: str, seed: int = 0, dtype: torch.dtype = torch.float32):
    """The architecture in eval mode, with every all-zero weight re-drawn (torchvision's ViT, for
    one, zero-initialises its head, which passes no gradient at all before training)."""
    torch.manual_seed(seed)
    model, shape = BUILDERS[name]()
    with torch.no_grad():
        for module in model.modules():
            w = getattr(module, "weight", None)
            if isinstance(w, torch.nn.Parameter) and w.dim() >= 2 and not w.any():
                torch.nn.init.normal_(w, std=0.02)
    return model.eval().to(dtype), shape


def example_input(shape, seed: int = 0):
    import numpy as np

    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
