"""Files of every TensorFlow format, written once per session (TF import and tracing are slow)."""

import importlib.util

import numpy as np
import pytest

if importlib.util.find_spec("tensorflow") is None or importlib.util.find_spec("keras") is None:
    collect_ignore_glob = ["test_*.py", "tf_models.py"]  # pip install 'xaiready[tf]' to run them


@pytest.fixture(scope="session")
def tf_files(tmp_path_factory):
    import tensorflow as tf

    from . import tf_models as tm

    d = tmp_path_factory.mktemp("tf")
    tm.functional().save(d / "functional.keras")
    tm.sequential().save(d / "sequential.keras")
    tm.nested().save(d / "nested.keras")
    tm.with_lambda().save(d / "lambda.keras")
    tm.functional().save(d / "functional.h5")
    tf.saved_model.save(tm.Module(), str(d / "savedmodel"))
    (d / "frozen.pb").write_bytes(tm.frozen_graph_def(tm.functional()).SerializeToString())
    np.save(d / "x.npy", tm.example_input(1)[0])  # (8, 8, 3): a batch axis is added
    return d


@pytest.fixture(scope="session")
def x():
    from . import tf_models as tm

    return tm.example_input(2)


def pytest_collection_modifyitems(items):
    # Keras' own saving code converts variables with np.array(copy=False) and NumPy 2 warns about it.
    for item in items:
        if "tests/tf/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"))
