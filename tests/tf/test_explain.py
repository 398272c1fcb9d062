"""Explainers on Keras models against hand-written TensorFlow references (tf-keras-vis style)."""

import numpy as np
import pytest

import xaiready as xr
from xaiready.api import as_handle

from . import tf_models as tm


def tutorial_gradcam(model, layer_output, x, k):
    """The Keras tutorial's Grad-CAM: a second model returning (layer output, prediction)."""
    import keras
    import tensorflow as tf

    grad_model = keras.Model(model.inputs, [layer_output, model.output])
    with tf.GradientTape() as tape:
        acts, out = grad_model(tf.constant(x))
        score = tf.reduce_sum(out[:, k])
    grads = tape.gradient(score, acts)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    return tf.nn.relu(tf.reduce_sum(weights * acts, axis=-1)).numpy()


def test_gradcam_matches_the_keras_tutorial(x):
    model = tm.functional()
    attr = xr.explain(as_handle(model), x, method="gradcam", target=xr.targets.Class(4), layer="relu2")
    ref = tutorial_gradcam(model, model.get_layer("relu2").output, x, 4)
    np.testing.assert_allclose(attr.raw, ref, rtol=1e-4, atol=1e-6)
    assert attr.values.shape == (2, 8, 8) and attr.layout == "NHWC"


def test_gradcam_inside_a_nested_model_where_the_tutorial_fails(x):
    """The tutorial's second model cannot reach a layer inside a sub-model; capture by call can."""
    import tensorflow as tf

    model = tm.nested()
    inner = model.get_layer("backbone").get_layer("r1")
    with pytest.raises(ValueError):
        tutorial_gradcam(model, inner.output, x, 1)
    attr = xr.explain(as_handle(model), x, method="gradcam", target=xr.targets.Class(1), layer="backbone/r1")
    backbone = model.get_layer("backbone")
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        acts = inner(backbone.get_layer("c1")(xt))
        h = backbone.get_layer("r2")(backbone.get_layer("c2")(acts))
        score = tf.reduce_sum(model.get_layer("fc")(model.get_layer("gap")(h))[:, 1])
    grads = tape.gradient(score, acts)
    ref = tf.nn.relu(tf.reduce_sum(tf.reduce_mean(grads, axis=(1, 2), keepdims=True) * acts, -1)).numpy()
    np.testing.assert_allclose(attr.raw, ref, rtol=1e-4, atol=1e-6)


def test_integrated_gradients_completeness_on_keras(x):
    attr = xr.explain(as_handle(tm.functional()), x, method="integrated-gradients", target=xr.targets.Class(0),
                      n_steps=64)
    assert attr.values.shape == x.shape
    assert attr.info["delta_rel_max"] < 1e-2


def test_segmentation_explained_in_nhwc(x):
    """Grad-CAM and saliency of a class-k region of an NHWC mask, against a hand-written tape: the class is
    the last axis of the (N, H, W, K) output, and the region is the pixels predicted as k."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(1)
    inp = keras.Input(tm.SHAPE)
    conv = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")
    head = keras.layers.Conv2D(3, 1, name="classifier")
    seg = keras.Model(inp, head(conv(inp)))
    handle = as_handle(seg)
    attr = xr.explain(handle, x, method="gradcam", target=xr.targets.SegmentationRegion(2), layer="conv")
    assert attr.values.shape == (2, 8, 8)
    sal = xr.explain(handle, x, method="saliency", target=xr.targets.SegmentationRegion(2))
    assert sal.values.shape == x.shape

    xt = tf.constant(x)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(xt)
        acts = conv(xt)
        logits = head(acts)  # (N, H, W, K)
        mask = tf.cast(tf.argmax(logits, axis=-1) == 2, logits.dtype)  # (N, H, W): pixels predicted as 2
        score = tf.reduce_sum(logits[..., 2] * mask)
    pixels = mask.numpy().reshape(len(x), -1).sum(1)
    assert (pixels > 0).all() and (pixels < 64).all()  # a real region in every sample, not the whole map
    grads = tape.gradient(score, acts)
    cam = tf.nn.relu(tf.reduce_sum(tf.reduce_mean(grads, axis=(1, 2), keepdims=True) * acts, -1)).numpy()
    np.testing.assert_allclose(attr.raw, cam, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(sal.values, np.abs(tape.gradient(score, xt).numpy()), rtol=1e-4, atol=1e-7)


def test_weights_only_h5_with_arch(tmp_path, x, capsys):
    from xaiready.cli import main

    model = tm.functional(seed=5)
    model.save_weights(tmp_path / "w.weights.h5")
    assert main(["check", str(tmp_path / "w.weights.h5"), "--input-shape", "1,8,8,3"]) == 3
    assert "weights only" in capsys.readouterr().err
    handle = xr.load(tmp_path / "w.weights.h5", arch="tests.tf.tf_models:functional")
    np.testing.assert_allclose(handle.forward(x), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_cli_error_is_one_line_on_the_real_stderr(tf_files):
    """TensorFlow's start-up logs must not reach stderr: one line per error, as for every format."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "xaiready.cli", "check", str(tf_files / "lambda.keras"),
                           "--input-shape", "1,8,8,3"], capture_output=True, text=True)
    assert proc.returncode == 4
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: "), proc.stderr
    # a SavedModel is frozen (Grappler runs) and explained: nothing at all on stderr
    proc = subprocess.run([sys.executable, "-m", "xaiready.cli", "explain", str(tf_files / "savedmodel"),
                           "--input", str(tf_files / "x.npy"), "--method", "gradcam", "--method", "guided-backprop",
                           "--save", str(tf_files / "cli-out.npy")], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
