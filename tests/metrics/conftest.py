"""Shared fixtures: the benchmark CNN, trained once per session, and a small correctly classified batch."""

from __future__ import annotations

import numpy as np
import pytest

from xaiready.api import explainer_for
from xaiready.benchmark.models import CAM_LAYER, handle_for, test_batch, train
from xaiready.targets import Class


@pytest.fixture(scope="session")
def trained():
    return train("classification")


@pytest.fixture(scope="session")
def handle(trained):
    return handle_for(trained)


@pytest.fixture(scope="session")
def batch(trained):
    x, y, mask = test_batch(trained, 8)
    return x, y, mask


@pytest.fixture(scope="session")
def target(handle, batch):
    x, y, _ = batch
    return handle.resolve(Class(y.tolist()), x)


@pytest.fixture(scope="session")
def saliency(handle):
    return explainer_for(handle, "saliency")


@pytest.fixture(scope="session")
def gradcam(handle):
    return explainer_for(handle, "gradcam", layer=CAM_LAYER)


@pytest.fixture(scope="session")
def maps(batch, target, saliency, gradcam):
    x = batch[0]
    return {"saliency": saliency(x, target), "gradcam": gradcam(x, target)}


@pytest.fixture
def rng():
    return np.random.default_rng(0)
