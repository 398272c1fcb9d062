"""Shared fixtures: seeds and small inputs. Each test folder builds its own models."""

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(0)
