"""Frozen graphs whose backward the file cannot carry: tf.custom_gradient ops lose their registered
gradient when a graph is frozen (Keras' swish/silu among them), and some ops have no gradient at all."""

import json
import subprocess
import sys

import numpy as np
import pytest

import xaiready as xr
from xaiready.cli import main

from . import tf_models as tm


def _keras_input_grad(model, x, k):
    """The Keras model's own gradient of logit k with respect to the input."""
    import tensorflow as tf

    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        score = tf.reduce_sum(model(xt, training=False)[:, k])
    return tape.gradient(score, xt).numpy()


def _custom_gradient_nodes(graph_def):
    return [n.name for n in graph_def.node
            if n.op == "IdentityN" and n.attr["_gradient_op_type"].s.startswith(b"CustomGradient-")]


def _rel_err(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _assert_gradient_ok(d):
    statuses = {c["name"]: c["status"] for c in d["checks"]}
    assert d["verdict"] in ("full", "gradient-only"), d
    assert d["gradient"]["status"] == "ok" and d["gradient"]["break"] is None, d["gradient"]
    assert statuses["gradient-correct"] == "pass", d["checks"]


def test_frozen_swish_model_takes_the_gradient_through_the_forward_ops(tmp_path, x):
    """In this process the graph's "CustomGradient-N" names are registered, but for the traced Keras graph,
    not for the imported one: the pass-through gradient must be used all the same."""
    model = tm.swish()
    graph_def = tm.frozen_graph_def(model)
    assert len(_custom_gradient_nodes(graph_def)) == 2  # the premise: swish and silu as custom gradients
    path = tmp_path / "swish.pb"
    path.write_bytes(graph_def.SerializeToString())
    handle = xr.load(path)
    d = xr.check(handle, x).to_dict()
    _assert_gradient_ok(d)
    assert d["verdict"] == "full"
    assert any("tf.custom_gradient" in note for note in d["notes"]), d["notes"]
    grad = handle.vjp(x, xr.targets.Class(3)).input_grad
    assert _rel_err(grad, _keras_input_grad(model, x, 3)) < 1e-3


def test_frozen_swish_model_checked_by_the_cli_in_a_fresh_process(tmp_path, x):
    """The reported crash: a new process has no registration for the graph's custom gradients at all."""
    path = tmp_path / "swish.pb"
    path.write_bytes(tm.frozen_graph_def(tm.swish()).SerializeToString())
    np.save(tmp_path / "x.npy", x)
    proc = subprocess.run([sys.executable, "-m", "xaiready.cli", "check", str(path), "--input",
                           str(tmp_path / "x.npy"), "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    _assert_gradient_ok(d)
    assert d["verdict"] == "full"


def test_savedmodel_of_a_swish_model_keeps_its_cam_layers(tmp_path, x):
    """A SavedModel restores its custom gradients, but the graph frozen from its signature for the CAM splits
    names them as the loaded functions do, and their restored backward does not run there."""
    import tensorflow as tf

    model = tm.swish()

    class Serving(tf.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None, *tm.SHAPE], tf.float32)])
        def __call__(self, t):
            return self.model(t, training=False)

    tf.saved_model.save(Serving(), str(tmp_path / "sm"))
    handle = xr.load(tmp_path / "sm")
    d = xr.check(handle, x).to_dict()
    _assert_gradient_ok(d)
    assert d["verdict"] == "full" and d["cam"]["default_layer"].endswith("silu2_1/mul_1"), d["cam"]
    layer = d["cam"]["default_layer"]
    res = handle.vjp(x, xr.targets.Class(3), layers=[layer])
    assert _rel_err(res.input_grad, _keras_input_grad(model, x, 3)) < 1e-3
    # the captured activation is the silu output, and its gradient that of the layers after it
    t = tf.constant(x)
    with tf.GradientTape() as tape:
        act = model.get_layer("silu2")(model.get_layer("conv2")(model.get_layer("conv1")(t)))
        tape.watch(act)
        score = tf.reduce_sum(model.get_layer("fc")(model.get_layer("gap")(act))[:, 3])
    np.testing.assert_allclose(res.activations[layer], act.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.layer_grads[layer], tape.gradient(score, act).numpy(), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("fmt", ["tf-graphdef", "tf-savedmodel"])
def test_an_op_without_a_gradient_is_inference_only_not_a_crash(tmp_path, x, capsys, fmt):
    import tensorflow as tf

    module = tm.AreaPooled()
    if fmt == "tf-graphdef":
        path = tmp_path / "area.pb"
        path.write_bytes(tm.frozen_graph_def(module).SerializeToString())
    else:
        path = tmp_path / "area"
        tf.saved_model.save(module, str(path))
    d = xr.check(xr.load(path), x).to_dict()
    assert d["model"]["format"] == fmt
    assert d["verdict"] == "inference-only" and d["gradient"]["status"] == "missing"
    found = d["gradient"]["break"]
    assert found["cause"] == "non-differentiable" and found["op"] == "ResizeArea", found
    assert found["location"].endswith("pool/ResizeArea") and "no gradient" in found["detail"]
    code = main(["check", str(path), "--input-shape", "1,8,8,3", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["gradient"]["break"]["op"] == "ResizeArea"


@pytest.mark.slow
def test_frozen_efficientnet_b0_reaches_a_verdict(tmp_path):
    """keras.applications.EfficientNetB0 (random weights, 32x32, batch 1) frozen to a TF1 GraphDef:
    49 swish IdentityN ops; about a minute on one core, most of it spent pruning the graph's 8 splits."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = keras.applications.EfficientNetB0(weights=None, input_shape=(32, 32, 3), classes=10,
                                              classifier_activation=None)
    graph_def = tm.frozen_graph_def(model, tf.TensorSpec([None, 32, 32, 3], tf.float32, name="image"))
    assert _custom_gradient_nodes(graph_def)
    path = tmp_path / "efficientnet.pb"
    path.write_bytes(graph_def.SerializeToString())
    x = np.random.default_rng(0).standard_normal((1, 32, 32, 3)).astype(np.float32)
    handle = xr.load(path)
    _assert_gradient_ok(xr.check(handle, x).to_dict())
    grad = handle.vjp(x, xr.targets.Class(4)).input_grad
    assert _rel_err(grad, _keras_input_grad(model, x, 4)) < 1e-3
