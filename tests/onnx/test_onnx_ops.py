"""Each op real exports use, as a one-node graph: converted output equals ONNX Runtime's, and the
converted gradient agrees with finite differences of ONNX Runtime itself."""

import numpy as np
import pytest
import torch
from onnx_helpers import assert_gradient_matches_ort, ort_run
from op_cases import cases

from xaiready.convert.onnx_to_torch import to_torch

CASES = cases()


@pytest.mark.parametrize("name,build", CASES, ids=[c[0] for c in CASES])
def test_op_matches_onnxruntime(name, build):
    model, x = build()
    expected = ort_run(model, x)[0]
    module = to_torch(model).module
    got = module(torch.from_numpy(x)).detach().numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert_gradient_matches_ort(model, module, x)


def test_resize_10_keeps_its_asymmetric_transform():
    """onnx's version converter would lift Resize-10 to 11 with the half-pixel transform, changing the
    function; it is converted at its own version instead."""
    model, x = dict(CASES)["Resize-10-linear"]()
    converted = to_torch(model)
    assert not any("upgraded opset" in n for n in converted.notes)
    np.testing.assert_allclose(converted.module(torch.from_numpy(x)).numpy(), ort_run(model, x)[0], atol=1e-5)
