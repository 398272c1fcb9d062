"""Keras transformers: token layers (B, N, C) are found by measurement and read through their layout,
as PyTorch's are. A small Keras ViT (patch convolution, a class token, MultiHeadAttention blocks)
fixes its token count in a Reshape, so it takes one input size and is measured from one pass."""

from __future__ import annotations

import numpy as np
import pytest

import xaiready as xr
from xaiready.targets import Class

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")


def keras_vit(size=32, patch=8, dim=32, depth=2, heads=2, classes=5):
    layers = keras.layers
    inp = keras.Input((size, size, 3))
    t = layers.Conv2D(dim, patch, strides=patch, name="patch")(inp)
    t = layers.Reshape(((size // patch) ** 2, dim), name="tokens")(t)
    cls = layers.Dense(dim, name="cls_proj")(layers.GlobalAveragePooling1D()(t))
    t = layers.Concatenate(axis=1, name="with_cls")([layers.Reshape((1, dim))(cls), t])
    for i in range(depth):
        h = layers.LayerNormalization(name=f"block{i}_norm1")(t)
        t = layers.Add(name=f"block{i}_add1")([t, layers.MultiHeadAttention(heads, dim // heads,
                                                                            name=f"block{i}_attn")(h, h)])
        h = layers.Dense(dim * 2, activation="gelu", name=f"block{i}_fc1")(layers.LayerNormalization()(t))
        t = layers.Add(name=f"block{i}_add2")([t, layers.Dense(dim, name=f"block{i}_fc2")(h)])
    t = layers.LayerNormalization(name="norm")(t)
    return keras.Model(inp, layers.Dense(classes, name="head")(t[:, 0]))


@pytest.fixture(scope="module")
def vit():
    keras.utils.set_random_seed(0)
    return keras_vit(), np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(np.float32)


def test_keras_token_layers_are_measured_and_the_default_is_the_last_attention_input(vit):
    model, x = vit
    cam = xr.check(model, x).to_dict()["cam"]
    assert cam["default_layer"] == "block1_norm1", cam["default_reason"]
    layouts = cam["layouts"]
    assert (layouts["block1_norm1"]["kind"], layouts["block1_norm1"]["prefix"],
            layouts["block1_norm1"]["grid"]) == ("tokens", 1, [4, 4])
    assert layouts["patch"]["kind"] == "NHWC"  # the patch map itself stays a map
    assert all(layouts[n]["kind"] == "none" for n in layouts if n.endswith(("/query", "/key", "/value")))


def test_keras_gradcam_on_tokens_equals_a_gradient_tape_derivation(vit):
    model, x = vit
    k = 3
    ours = xr.explain(model, x, "gradcam", Class(k), layer="block1_norm1", sanity="off")
    inner = keras.Model(model.inputs, [model.get_layer("block1_norm1").output, model.output])
    with tf.GradientTape() as tape:
        tokens, out = inner(x)
        score = tf.reduce_sum(out[:, k])
    grads = tape.gradient(score, tokens).numpy()
    acts = tokens.numpy()
    a = acts[:, 1:, :].reshape(2, 4, 4, -1)  # drop the class token, restore the 4x4 grid
    g = grads[:, 1:, :].reshape(2, 4, 4, -1)
    cam = np.maximum((g.mean(axis=(1, 2), keepdims=True) * a).sum(-1), 0)
    np.testing.assert_allclose(ours.raw, cam, rtol=1e-4, atol=1e-6)
