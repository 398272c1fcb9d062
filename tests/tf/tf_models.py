"""Small Keras and TF models for the TensorFlow tests: healthy ones in every format, broken ones.

Inputs are (N, 8, 8, 3) NHWC. Broken parts are registered custom layers (so models save and load
without Lambda code) or Lambdas for in-memory checks; ``BROKEN`` records what the check must find.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers  # noqa: E402

SHAPE = (8, 8, 3)
PKG = "xaiready_tf_tests"


def example_input(n: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n,) + SHAPE).astype(np.float32)


def _seeded(seed: int = 0):
    keras.utils.set_random_seed(seed)


@keras.saving.register_keras_serializable(package=PKG)
class StopGrad(layers.Layer):
    def call(self, x):
        return tf.stop_gradient(x)


@keras.saving.register_keras_serializable(package=PKG)
class ThroughNumpy(layers.Layer):
    def call(self, x):
        return tf.numpy_function(lambda a: a * 2.0, [x], tf.float32, stateful=False)

    def compute_output_shape(self, shape):
        return shape


@keras.saving.register_keras_serializable(package=PKG)
class ArgmaxHead(layers.Layer):
    def call(self, x):
        return tf.argmax(x, axis=-1)

    def compute_output_shape(self, shape):
        return shape[:-1]


@keras.saving.register_keras_serializable(package=PKG)
class Quantize(layers.Layer):
    def call(self, x):
        return tf.cast(tf.cast(x * 4.0, tf.int32), tf.float32) / 4.0


@keras.saving.register_keras_serializable(package=PKG)
class WrongGradient(layers.Layer):
    """Identity forward, but its custom backward doubles the gradient: a lying custom_gradient."""

    def call(self, x):
        @tf.custom_gradient
        def f(t):
            return tf.identity(t), lambda dy: 2.0 * dy

        return f(x)


def functional(num_classes: int = 5, seed: int = 0, middle=None, head=None) -> keras.Model:
    """conv-relu, conv-relu, GAP, dense; ``middle`` is inserted after the first block."""
    _seeded(seed)
    inp = keras.Input(SHAPE, name="image")
    h = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inp)
    if middle is not None:
        h = middle(h)
    h = layers.Conv2D(8, 3, padding="same", name="conv2")(h)
    h = layers.ReLU(name="relu2")(h)
    h = layers.GlobalAveragePooling2D(name="gap")(h)
    out = layers.Dense(num_classes, name="fc")(h)
    if head is not None:
        out = head(out)
    return keras.Model(inp, out, name="functional")


def sequential(num_classes: int = 5, seed: int = 0) -> keras.Model:
    _seeded(seed)
    return keras.Sequential([
        keras.Input(SHAPE),
        layers.Conv2D(8, 3, padding="same", name="conv1"),
        layers.Activation("relu", name="act1"),
        layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2"),
        layers.GlobalAveragePooling2D(name="gap"),
        layers.Dense(num_classes, name="fc"),
    ], name="sequential")


def nested(num_classes: int = 5, seed: int = 0, inner_middle=None) -> keras.Model:
    """A functional model whose backbone is itself a Sequential model (a sub-model used as a layer)."""
    _seeded(seed)
    inner = [keras.Input(SHAPE), layers.Conv2D(8, 3, padding="same", name="c1"), layers.ReLU(name="r1")]
    if inner_middle is not None:
        inner.append(inner_middle)
    inner += [layers.Conv2D(8, 3, padding="same", name="c2"), layers.ReLU(name="r2")]
    backbone = keras.Sequential(inner, name="backbone")
    inp = keras.Input(SHAPE, name="image")
    h = backbone(inp)
    h = layers.GlobalAveragePooling2D(name="gap")(h)
    out = layers.Dense(num_classes, name="fc")(h)
    return keras.Model(inp, out, name="nested")


def with_lambda(seed: int = 0) -> keras.Model:
    """A harmless Lambda (no globals needed after loading); still refused without trust."""
    return functional(seed=seed, middle=layers.Lambda(lambda t: t * 2.0, name="double"))


class Module(tf.Module):
    """A plain tf.Module (no Keras) with a serving signature."""

    def __init__(self, num_classes: int = 5, seed: int = 0):
        super().__init__()
        g = tf.random.Generator.from_seed(seed)
        self.w1 = tf.Variable(g.normal([3, 3, 3, 8]) * 0.3)
        self.w2 = tf.Variable(g.normal([8, num_classes]) * 0.3)

    @tf.function(input_signature=[tf.TensorSpec([None, *SHAPE], tf.float32, name="image")])
    def __call__(self, x):
        h = tf.nn.relu(tf.nn.conv2d(x, self.w1, 1, "SAME"), name="features")
        return {"logits": tf.matmul(tf.reduce_mean(h, [1, 2]), self.w2)}


def frozen_graph_def(fn, spec=None):
    """A TF1-style frozen GraphDef of a Keras model or tf.function, via convert_variables_to_constants_v2."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    spec = spec or tf.TensorSpec([None, *SHAPE], tf.float32, name="image")
    concrete = tf.function(lambda x: fn(x)).get_concrete_function(spec)
    return convert_variables_to_constants_v2(concrete).graph.as_graph_def()


# What the readiness check must find on each broken model: (builder, status, location, cause).
BROKEN = {
    "stop-gradient": (lambda: functional(middle=StopGrad(name="cut")), "missing", "cut", "detach"),
    "numpy-function": (lambda: functional(middle=ThroughNumpy(name="np")), "missing", "np", "numpy"),
    "integer-cast": (lambda: functional(middle=Quantize(name="quant")), "missing", "quant", "non-differentiable"),
    "argmax-head": (lambda: functional(head=ArgmaxHead(name="argmax")), "missing", "argmax", "non-differentiable"),
    "nested-stop-gradient": (lambda: nested(inner_middle=StopGrad(name="cut")), "missing", "backbone/cut",
                             "detach"),
    "keras-ops-stop-gradient": (lambda: functional(middle=keras.ops.stop_gradient), "missing",
                                "stop_gradient", "detach"),
    "custom-gradient": (lambda: functional(middle=WrongGradient(name="liar")), "incorrect", "liar",
                        "custom-backward"),
}


def swish(num_classes: int = 5, seed: int = 0) -> keras.Model:
    """Conv blocks with swish/silu activations: Keras' TensorFlow backend computes them with
    ``tf.nn.silu``, a ``tf.custom_gradient`` that a traced graph holds as an ``IdentityN`` op."""
    _seeded(seed)
    inp = keras.Input(SHAPE, name="image")
    h = layers.Conv2D(8, 3, padding="same", activation="swish", name="conv1")(inp)
    h = layers.Conv2D(8, 3, padding="same", name="conv2")(h)
    h = layers.Activation(keras.activations.silu, name="silu2")(h)
    h = layers.GlobalAveragePooling2D(name="gap")(h)
    return keras.Model(inp, layers.Dense(num_classes, name="fc")(h), name="swish")


class AreaPooled(tf.Module):
    """conv-relu, then ``ResizeArea`` (an op TensorFlow registers no gradient for), on the only path."""

    def __init__(self):
        super().__init__()
        self.w = tf.Variable(tf.random.stateless_normal([3, 3, 3, 4], seed=[1, 2]))
        self.d = tf.Variable(tf.random.stateless_normal([4, 3], seed=[3, 4]))

    @tf.function(input_signature=[tf.TensorSpec([None, *SHAPE], tf.float32)])
    def __call__(self, x):
        h = tf.nn.relu(tf.nn.conv2d(x, self.w, 1, "SAME"))
        h = tf.image.resize(h, [4, 4], method="area", name="pool")
        return tf.matmul(tf.reduce_mean(h, [1, 2]), self.d)
