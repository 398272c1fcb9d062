"""Each TensorFlow format loads by content and reaches the verdict it can measure."""

import json

import numpy as np
import pytest

import xaiready as xr
from xaiready.cli import main

from . import tf_models as tm


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name, fmt, default_layer", [
    ("functional.keras", "keras", "relu2"),
    ("sequential.keras", "keras", "conv2"),
    ("nested.keras", "keras", "backbone"),
    ("functional.h5", "keras", "relu2"),
    ("savedmodel", "tf-savedmodel", "StatefulPartitionedCall/features"),
    ("frozen.pb", "tf-graphdef", None),
])
def test_every_format_reaches_full(tf_files, x, name, fmt, default_layer):
    handle = xr.load(tf_files / name)
    report = xr.check(handle, x)
    d = report.to_dict()
    assert d["model"]["format"] == fmt and d["model"]["framework"] == "tensorflow"
    assert d["verdict"] == "full", d["cam"]
    assert d["gradient"]["status"] == "ok" and d["gradient"]["break"] is None
    statuses = {c["name"]: c["status"] for c in d["checks"]}
    assert statuses["gradient-correct"] == "pass" and statuses["model-unchanged"] == "pass"
    if default_layer:
        assert d["cam"]["default_layer"] == default_layer


def test_nested_layers_are_named_by_path(tf_files, x):
    handle = xr.load(tf_files / "nested.keras")
    names = handle.layers().names
    assert names[:5] == ["backbone", "backbone/c1", "backbone/r1", "backbone/c2", "backbone/r2"]
    assert {"backbone/r1", "backbone/r2", "backbone"} <= set(xr.check(handle, x).cam["layers"])


def test_nested_capture_matches_a_manual_split(tf_files, x):
    """Activation and gradient of a layer inside a sub-model equal a hand-written two-stage tape."""
    import tensorflow as tf

    handle = xr.load(tf_files / "nested.keras")
    model = handle.backend.model
    res = handle.vjp(x, xr.targets.Class(2), layers=["backbone/r1"])
    backbone = model.get_layer("backbone")
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        a = backbone.get_layer("r1")(backbone.get_layer("c1")(xt))
        tape.watch(a)
        h = backbone.get_layer("r2")(backbone.get_layer("c2")(a))
        out = model.get_layer("fc")(model.get_layer("gap")(h))
        score = tf.reduce_sum(out[:, 2])
    np.testing.assert_allclose(res.activations["backbone/r1"], a.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.layer_grads["backbone/r1"], tape.gradient(score, a).numpy(), rtol=1e-4,
                               atol=1e-6)
    np.testing.assert_allclose(res.output, out.numpy(), rtol=1e-5, atol=1e-6)


def test_frozen_graph_matches_the_keras_model(tf_files, x):
    keras_handle, graph_handle = xr.load(tf_files / "functional.keras"), xr.load(tf_files / "frozen.pb")
    np.testing.assert_allclose(graph_handle.forward(x), keras_handle.forward(x), rtol=1e-5, atol=1e-5)
    target = xr.targets.Class(1)
    g_graph = graph_handle.vjp(x, target).input_grad
    g_keras = keras_handle.vjp(x, target).input_grad
    np.testing.assert_allclose(g_graph, g_keras, rtol=1e-4, atol=1e-6)
    # the deepest split of the frozen graph is the model's last ReLU: same activation as the Keras layer
    layer = graph_handle.layers().names[-1]
    assert "relu2" in layer
    res_graph = graph_handle.vjp(x, target, layers=[layer], input_grad=False)
    res_keras = keras_handle.vjp(x, target, layers=["relu2"], input_grad=False)
    np.testing.assert_allclose(res_graph.activations[layer], res_keras.activations["relu2"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res_graph.layer_grads[layer], res_keras.layer_grads["relu2"], rtol=1e-4, atol=1e-7)
    # any float tensor can be named, not only the offered ones; a missing one is a usage error
    first = next(n.name for n in graph_handle.backend.graph_def.node if n.op == "Conv2D")
    assert first not in graph_handle.layers().names or len(graph_handle.layers().names) < 8
    assert graph_handle.vjp(x, target, layers=[first], input_grad=False).layer_grads[first] is not None
    with pytest.raises(xr.errors.UsageError):
        graph_handle.vjp(x, target, layers=["no/such/node"])


def test_savedmodel_signature_choice(tf_files, capsys):
    code, _, err = _run(capsys, "check", tf_files / "savedmodel", "--signature", "nope", "--input-shape", "1,8,8,3")
    assert code == 2 and "serving_default" in err and err.count("\n") == 1
    code, out, err = _run(capsys, "check", tf_files / "savedmodel", "--signature", "serving_default",
                          "--input-shape", "1,8,8,3", "--json")
    assert code == 0, err
    assert json.loads(out)["verdict"] == "full"


def test_graphdef_inputs_and_outputs_by_name(tf_files, tmp_path, capsys):
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        a = tf.compat.v1.placeholder(tf.float32, [None, 4], name="a")
        tf.compat.v1.placeholder(tf.float32, [None, 4], name="unused")
        tf.identity(a * 2.0, name="twice")
        tf.identity(a * 3.0, name="thrice")
    path = tmp_path / "two.pb"
    path.write_bytes(graph.as_graph_def().SerializeToString())
    code, _, err = _run(capsys, "check", path, "--input-shape", "1,4")
    assert code == 2 and "--inputs" in err and "a, unused" in err
    code, _, err = _run(capsys, "check", path, "--input-shape", "1,4", "--inputs", "a")
    assert code == 2 and "--outputs" in err
    code, out, err = _run(capsys, "check", path, "--input-shape", "1,4", "--inputs", "a", "--outputs", "thrice",
                          "--task", "regression", "--target", "1", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["verdict"] == "gradient-only" and d["cam"]["status"] == "unavailable"
    h = xr.load(path, inputs="a", outputs="thrice")
    np.testing.assert_allclose(h.forward(np.ones((1, 4), np.float32)), 3.0)


def test_lambda_needs_trust(tf_files, x, capsys):
    code, _, err = _run(capsys, "check", tf_files / "lambda.keras", "--input-shape", "1,8,8,3")
    assert code == 4 and "Lambda" in err and "double" in err and err.count("\n") == 1
    code, out, err = _run(capsys, "check", tf_files / "lambda.keras", "--input-shape", "1,8,8,3", "--trust", "--json")
    assert code == 0, err
    assert json.loads(out)["verdict"] == "full"


def test_graph_with_python_op_needs_trust(tmp_path, capsys):
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        a = tf.compat.v1.placeholder(tf.float32, [None, 4], name="a")
        tf.identity(tf.numpy_function(lambda v: v, [a], tf.float32), name="out")
    path = tmp_path / "pyfunc.pb"
    path.write_bytes(graph.as_graph_def().SerializeToString())
    code, _, err = _run(capsys, "check", path, "--input-shape", "1,4")
    assert code == 4 and "PyFunc" in err


def test_missing_custom_class_is_named_then_imported(tmp_path, x, capsys):
    code_file = tmp_path / "my_tf_layers.py"
    code_file.write_text(
        "import keras\n\n"
        "class TimesThree(keras.layers.Layer):\n"
        "    def call(self, x):\n"
        "        return x * 3.0\n")
    import importlib.util

    spec = importlib.util.spec_from_file_location("my_tf_layers_build", code_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = tm.functional(middle=module.TimesThree(name="three"))
    model.save(tmp_path / "custom.keras")
    model.save(tmp_path / "custom.h5")
    for name in ("custom.keras", "custom.h5"):
        code, _, err = _run(capsys, "check", tmp_path / name, "--input-shape", "1,8,8,3")
        assert code == 3 and "TimesThree" in err and "--import" in err and err.count("\n") == 1
    for name in ("custom.keras", "custom.h5"):
        code, out, err = _run(capsys, "check", tmp_path / name, "--input-shape", "1,8,8,3",
                              "--import", code_file, "--json")
        assert code == 0, err
        assert json.loads(out)["verdict"] == "full"


@pytest.mark.parametrize("kind", ["truncated-keras", "garbage-h5", "empty-savedmodel", "nodeless-graph"])
def test_corrupt_files_exit_3(tf_files, tmp_path, capsys, kind):
    if kind == "truncated-keras":
        path = tmp_path / "m.keras"
        path.write_bytes((tf_files / "functional.keras").read_bytes()[:400])
    elif kind == "garbage-h5":
        path = tmp_path / "m.h5"
        path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00garbage" * 20)
    elif kind == "empty-savedmodel":
        path = tmp_path / "sm"
        path.mkdir()
        (path / "saved_model.pb").write_bytes(b"\x0a\x05hello\x12\x03abc")
    else:
        path = tmp_path / "m.pb"
        path.write_bytes(b"\x0a\x00")
    code, _, err = _run(capsys, "check", path, "--input-shape", "1,8,8,3")
    assert code == 3, err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_npy_input_and_explain_cli(tf_files, tmp_path, capsys):
    code, out, err = _run(capsys, "check", tf_files / "functional.keras", "--input", tf_files / "x.npy", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["input_shape"] == [1, 8, 8, 3] and d["verdict"] == "full"
    code, out, err = _run(capsys, "explain", tf_files / "functional.keras", "--input", tf_files / "x.npy",
                          "--method", "gradcam", "--save", tmp_path / "cam.npy")
    assert code == 0, err
    assert np.load(tmp_path / "cam.npy").shape == (1, 8, 8)


def test_tensorflow_is_not_imported_for_help():
    import subprocess
    import sys

    code = ("import sys, contextlib, io\n"
            "from xaiready.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try:\n        main(['--help'])\n    except SystemExit:\n        pass\n"
            "import xaiready\n"
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False False"


def test_savedmodel_reading_files_needs_trust(tmp_path, capsys):
    import tensorflow as tf

    class Reader(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def __call__(self, x):
            size = tf.cast(tf.strings.length(tf.io.read_file("/etc/hostname")), tf.float32)
            return x * size

    tf.saved_model.save(Reader(), str(tmp_path / "reader"))
    code, _, err = _run(capsys, "check", tmp_path / "reader", "--input-shape", "1,4")
    assert code == 4 and "ReadFile" in err and err.count("\n") == 1


def test_trusted_lambda_whose_code_fails_after_loading(tmp_path, capsys):
    import keras
    import tensorflow as tf

    tm.functional(middle=keras.layers.Lambda(lambda t: tf.nn.relu(t), name="lam")).save(tmp_path / "l.keras")
    code, _, err = _run(capsys, "check", tmp_path / "l.keras", "--input-shape", "1,8,8,3", "--trust")
    assert code == 3 and "Lambda" in err and err.count("\n") == 1
