"""Broken Keras models: the check names the layer where the gradient path dies and why."""

import numpy as np
import pytest

import xaiready as xr
from xaiready.api import as_handle

from . import tf_models as tm


@pytest.mark.parametrize("name", list(tm.BROKEN))
def test_break_location_and_cause(name, x):
    build, status, location, cause = tm.BROKEN[name]
    d = xr.check(build(), x).to_dict()
    assert d["verdict"] == "inference-only"
    assert d["gradient"]["status"] == status
    assert d["gradient"]["break"]["location"] == location, d["gradient"]["break"]
    assert d["gradient"]["break"]["cause"] == cause
    assert d["cam"]["status"] == "unavailable"


def test_broken_model_saved_and_loaded_is_located_by_name(tmp_path, x):
    tm.functional(middle=tm.StopGrad(name="cut")).save(tmp_path / "broken.keras")
    d = xr.check(xr.load(tmp_path / "broken.keras"), x).to_dict()
    assert d["gradient"]["break"]["location"] == "cut" and d["gradient"]["break"]["after"] == "conv1"


def test_py_function_through_numpy_is_zero_or_missing_at_the_layer(x):
    import keras
    import tensorflow as tf

    lam = keras.layers.Lambda(
        lambda t: tf.py_function(lambda a: tf.constant(a.numpy() * 2.0), [t], tf.float32),
        output_shape=(8, 8, 8), name="py")
    d = xr.check(tm.functional(middle=lam), x).to_dict()
    assert d["gradient"]["status"] in ("missing", "zero")
    assert d["gradient"]["break"]["location"] == "py" and d["gradient"]["break"]["cause"] == "numpy"


def test_a_cut_beside_a_live_path_is_an_incorrect_gradient(x):
    """h + stop_gradient(h): a gradient exists but misses half the dependence; named at the cut."""
    import keras

    inp = keras.Input(tm.SHAPE)
    h = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inp)
    side = tm.StopGrad(name="side")(h)
    h = keras.layers.Add(name="add")([h, side])
    out = keras.layers.Dense(3, name="fc")(keras.layers.GlobalAveragePooling2D()(h))
    d = xr.check(keras.Model(inp, out), x).to_dict()
    assert d["verdict"] == "inference-only" and d["gradient"]["status"] == "incorrect"
    assert d["gradient"]["break"]["location"] == "side" and d["gradient"]["break"]["cause"] == "detach"


def test_segmentation_and_regression_targets(x):
    import keras

    inp = keras.Input(tm.SHAPE)
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inp)
    seg = keras.Model(inp, keras.layers.Conv2D(3, 1, name="classifier")(h))
    d = xr.check(seg, x, task="segmentation").to_dict()
    assert d["verdict"] == "full" and d["task"] == "segmentation"
    assert d["cam"]["default_layer"] == "conv"  # the 3-channel head is not a feature layer
    reg = keras.Model(inp, keras.layers.Dense(2, name="out")(keras.layers.Flatten()(h)))
    d = xr.check(reg, x, target=xr.targets.Regression(1)).to_dict()
    assert d["verdict"] == "full" and d["target"] == {"type": "regression", "index": 1}


def test_custom_target_uses_tensorflow_ops(x):
    import tensorflow as tf

    handle = as_handle(tm.functional())
    res = handle.vjp(x, xr.targets.Custom(lambda out: tf.nn.log_softmax(out)[:, 3]))
    ref = handle.vjp(x, xr.targets.Class(3, score="log-probability"))
    np.testing.assert_allclose(res.scores, ref.scores, rtol=1e-5)
    np.testing.assert_allclose(res.input_grad, ref.input_grad, rtol=1e-4, atol=1e-7)


def test_model_is_left_as_found_even_after_errors(x):
    import tensorflow as tf

    model = tm.nested()
    handle = as_handle(model)
    relu = tf.nn.relu
    before = handle.backend.state_snapshot()
    weights = [w.numpy().copy() for w in model.weights]
    with pytest.raises(RuntimeError):
        with handle.relu_override("guided"):
            assert tf.nn.relu is not relu
            raise RuntimeError("boom")
    with pytest.raises(xr.errors.UsageError):
        handle.vjp(x, xr.targets.Class(0), layers=["backbone/r1", "no-such-layer"])
    with pytest.raises(xr.errors.UsageError):  # raised inside the pass, while the layers are wrapped
        handle.vjp(x, xr.targets.Class(99), layers=["backbone/r1", "gap"])
    xr.check(handle, x)
    xr.explain(handle, x, method="guided-gradcam", target=xr.targets.Class(1))
    assert tf.nn.relu is relu and not tf.config.functions_run_eagerly()
    assert handle.backend.state_snapshot() == before
    assert not any("call" in vars(layer) for _, layer in
                   __import__("xaiready.backends.tensorflow", fromlist=["walk_layers"]).walk_layers(model))
    for w, v in zip(model.weights, weights, strict=True):
        np.testing.assert_array_equal(w.numpy(), v)


def test_guided_override_counts_relus_and_others(x):
    import keras
    import tensorflow as tf

    inp = keras.Input(tm.SHAPE)
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inp)  # relu inside a layer
    h = keras.layers.ReLU(name="r")(keras.layers.Conv2D(4, 3, padding="same", name="c2")(h))  # ReLU layer
    h = keras.layers.Lambda(lambda t: tf.nn.relu(t - 0.1), output_shape=(8, 8, 4), name="raw")(h)  # raw tf.nn
    h = keras.layers.Activation("gelu", name="g")(h)
    h = keras.layers.ReLU(max_value=6.0, name="r6")(h)
    out = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(h))
    handle = as_handle(keras.Model(inp, out))
    target = xr.targets.Class(0)
    plain = handle.vjp(x, target).input_grad
    with handle.relu_override("guided") as stats:
        guided = handle.vjp(x, target).input_grad
    assert stats.relu_calls == 3 and stats.overridden == 3
    assert stats.not_overridable == {"gelu": 1, "relu6": 1}
    assert not np.allclose(plain, guided)


def test_guided_backprop_matches_a_hand_written_rule(x):
    """conv -> relu -> dense on GAP: guided gradient computed by hand with tf.custom_gradient-free math."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(3)
    inp = keras.Input(tm.SHAPE)
    conv = keras.layers.Conv2D(4, 3, padding="same", name="c")
    dense = keras.layers.Dense(3, name="fc")
    out = dense(keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(conv(inp))))
    handle = as_handle(keras.Model(inp, out))
    with handle.relu_override("guided"):
        ours = handle.vjp(x, xr.targets.Class(1)).input_grad
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        z = conv(xt)
    y = tf.nn.relu(z)
    dy = tf.broadcast_to(dense.kernel[:, 1] / 64.0, y.shape)  # d score / d relu output through GAP and fc
    dz = tf.maximum(dy, 0.0) * tf.cast(y > 0, tf.float32)
    ref = tape.gradient(z, xt, output_gradients=dz)
    np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-4, atol=1e-7)


def test_compiled_graphs_override_their_relu_ops(tf_files, x):
    """A frozen graph is re-imported with the rule on its Relu ops: same guided gradient as the Keras model."""
    keras_handle, graph_handle = xr.load(tf_files / "functional.keras"), xr.load(tf_files / "frozen.pb")
    target = xr.targets.Class(1)
    plain = graph_handle.vjp(x, target).input_grad
    with graph_handle.relu_override("guided") as stats:
        guided = graph_handle.vjp(x, target).input_grad
    with keras_handle.relu_override("guided") as keras_stats:
        ref = keras_handle.vjp(x, target).input_grad
    assert stats.overridden == keras_stats.overridden == 2 and not stats.not_overridable
    np.testing.assert_allclose(guided, ref, rtol=1e-4, atol=1e-7)
    assert not np.allclose(guided, plain)
    np.testing.assert_allclose(graph_handle.vjp(x, target).input_grad, plain)  # the rule is gone afterwards
    saved = xr.load(tf_files / "savedmodel")
    with saved.relu_override("deconvnet") as stats:
        saved.vjp(x, target)
    assert stats.overridden == 1


class _BrokenModule:
    """tf.Module factories whose graphs cut the gradient with a given op."""

    @staticmethod
    def build(kind):
        import tensorflow as tf

        class M(tf.Module):
            def __init__(self):
                super().__init__()
                self.w = tf.Variable(tf.random.stateless_normal([3, 3, 3, 4], seed=[1, 2]))
                self.d = tf.Variable(tf.random.stateless_normal([4, 3], seed=[3, 4]))

            @tf.function(input_signature=[tf.TensorSpec([None, *tm.SHAPE], tf.float32)])
            def __call__(self, x):
                h = tf.nn.relu(tf.nn.conv2d(x, self.w, 1, "SAME"))
                if kind == "stop-gradient":
                    h = tf.stop_gradient(h, name="cut")
                logits = tf.matmul(tf.reduce_mean(h, [1, 2]), self.d)
                return tf.argmax(logits, axis=-1, name="pick") if kind == "argmax" else logits

        return M()


@pytest.mark.parametrize("kind, op, cause", [("stop-gradient", "StopGradient", "detach"),
                                             ("argmax", "ArgMax", "non-differentiable")])
@pytest.mark.parametrize("fmt", ["tf-savedmodel", "tf-graphdef"])
def test_compiled_graph_breaks_are_named_by_op(tmp_path, x, kind, op, cause, fmt):
    import tensorflow as tf

    module = _BrokenModule.build(kind)
    if fmt == "tf-savedmodel":
        path = tmp_path / "sm"
        tf.saved_model.save(module, str(path))
    else:
        path = tmp_path / "g.pb"
        path.write_bytes(tm.frozen_graph_def(module).SerializeToString())
    d = xr.check(xr.load(path), x).to_dict()
    assert d["model"]["format"] == fmt
    assert d["verdict"] == "inference-only" and d["gradient"]["status"] == "missing"
    assert d["gradient"]["break"]["cause"] == cause and d["gradient"]["break"]["op"] == op


def test_randomized_protocol_restores_keras_weights_exactly(tf_files, x):
    """The optional layer-randomization protocol (metrics): Keras yes, restored also after an error;
    frozen graphs have no variables, so they do not offer it."""
    model = tm.nested()
    backend = as_handle(model).backend
    assert backend.randomizable_layers() == ["backbone/c1", "backbone/c2", "fc"]
    before = [w.numpy().copy() for w in model.weights]
    out = model.predict(x, verbose=0)
    with backend.randomized(["fc", "backbone/c2"], seed=1):
        assert not np.allclose(model.predict(x, verbose=0), out)
        fc = model.get_layer("fc").kernel.numpy()
        assert np.abs(fc).max() <= 8 ** -0.5  # U(-1/sqrt(fan-in), 1/sqrt(fan-in)), fan-in 8
    with pytest.raises(RuntimeError), backend.randomized(["fc"], seed=2):
        raise RuntimeError("boom")
    for w, v in zip(model.weights, before, strict=True):
        np.testing.assert_array_equal(w.numpy(), v)
    assert not hasattr(xr.load(tf_files / "frozen.pb").backend, "randomized")


def test_subclassed_model_layers_and_a_cut_in_its_own_call(x):
    import keras
    import tensorflow as tf

    class Net(keras.Model):
        def __init__(self, broken=False):
            super().__init__()
            self.broken = broken
            self.stem = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="stem")
            self.block = keras.Sequential([keras.layers.Conv2D(4, 3, padding="same"), keras.layers.ReLU()],
                                          name="block")
            self.fc = keras.layers.Dense(3, name="fc")

        def call(self, t):
            h = self.block(self.stem(t))
            if self.broken:
                h = tf.stop_gradient(h)
            return self.fc(tf.reduce_mean(h, [1, 2]))

    healthy, broken = Net(), Net(broken=True)
    healthy(x), broken(x)
    d = xr.check(healthy, x).to_dict()
    assert d["verdict"] == "full" and d["cam"]["default_layer"] == "block"
    d = xr.check(broken, x).to_dict()
    assert d["verdict"] == "inference-only"
    assert d["gradient"]["break"]["location"] == "(root)" and d["gradient"]["break"]["cause"] == "detach"
    assert d["gradient"]["break"]["after"] == "block"
