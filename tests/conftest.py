"""Shared fixtures: seeds and small inputs. Each test folder builds its own models."""

import importlib.util

import numpy as np
import pytest

# torch's compiler stack must be loaded before TensorFlow: triton imported after TensorFlow segfaults
# (torch 2.14 / tensorflow-cpu 2.21). Test modules import TensorFlow directly, so fix the order here.
if importlib.util.find_spec("torch") is not None:
    import torch._dynamo  # noqa: F401


@pytest.fixture
def rng():
    return np.random.default_rng(0)
