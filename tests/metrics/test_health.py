"""Every health check: one case that triggers it and one that does not."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from xaiready.api import as_handle
from xaiready.benchmark.models import CAM_LAYER
from xaiready.explain.base import Attribution
from xaiready.metrics.baselines import random_map
from xaiready.metrics.health import (
    check_guided_override,
    check_map_values,
    check_model_randomization,
    check_saturation,
    check_target_sensitivity,
    run_health_checks,
)
from xaiready.targets import Class


@pytest.mark.parametrize("bad,word", [(np.zeros((2, 4, 4)), "all zero"), (np.full((2, 4, 4), 0.5), "constant"),
                                      (np.where(np.eye(4)[None] > 0, np.nan, 1.0).repeat(2, 0), "non-finite")])
def test_map_values_triggers(bad, word):
    r = check_map_values(bad)
    assert r.status == "warn" and word in r.detail


def test_map_values_passes(rng):
    assert check_map_values(rng.random((2, 4, 4))).status == "pass"


def test_saturation(handle, batch):
    big = as_handle(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 3)))
    with torch.no_grad():
        big.backend.module[1].weight.zero_()
        big.backend.module[1].bias.copy_(torch.tensor([30.0, 0.0, 0.0]))
    x = batch[0][:2]
    prob = big.resolve(Class(None, score="probability"), x)
    assert check_saturation(big, x, prob).status == "warn"
    assert check_saturation(big, x, big.resolve(Class(None), x)).status == "pass"  # logits do not vanish
    with torch.no_grad():
        big.backend.module[1].bias.zero_()
    assert check_saturation(big, x, prob).status == "pass"


def test_guided_override(handle, batch, target):
    x = batch[0][:2]
    t = target.take([0, 1])
    plain = handle.vjp(x, t).input_grad
    fake = Attribution(plain, "guided-backprop", "gradient", {})
    assert check_guided_override(handle, x, t, fake).status == "warn"
    import xaiready as xr

    real = xr.explain(handle, x, "guided-backprop", target=Class(t._k.tolist()))
    assert check_guided_override(handle, x, t, real).status == "pass"


def test_target_sensitivity(handle, batch, target, maps, gradcam):
    x, t = batch[0], target
    blind = lambda xs, tt: random_map(xs, 1)  # noqa: E731  a map that ignores the class
    assert check_target_sensitivity(handle, x, random_map(x, 1), t, blind).status == "warn"
    assert check_target_sensitivity(handle, x, maps["gradcam"], t, gradcam).status == "pass"


def test_model_randomization(handle, batch, target, maps, gradcam):
    x, t = batch[0], target
    blind = lambda xs, tt: random_map(xs, 1)  # noqa: E731  a map that ignores the model
    assert check_model_randomization(handle, x, random_map(x, 1), t, blind).status == "warn"
    assert check_model_randomization(handle, x, maps["gradcam"], t, gradcam).status == "pass"


def test_run_health_checks_levels(handle, batch, target):
    import xaiready as xr

    x = batch[0][:4]
    attr = xr.explain(handle, x, "gradcam", target=Class(target._k[:4].tolist()), layer=CAM_LAYER)
    cheap = {r.name: r.status for r in run_health_checks(handle, x, attr, target.take(np.arange(4)))}
    assert cheap == {"map-values": "pass", "saturated-output": "pass", "target-sensitivity": "pass"}
    full = {r.name: r.status for r in run_health_checks(handle, x, attr, target.take(np.arange(4)), level="full")}
    assert full["model-randomization"] == "pass"
    dead = replace(attr, values=np.zeros_like(attr.values), raw=np.zeros_like(attr.values))
    found = run_health_checks(handle, x, dead, target.take(np.arange(4)))
    assert [r.name for r in found if r.status == "warn"][0] == "map-values"


def test_explain_records_health_findings_and_off_skips_them():
    """xr.explain runs the cheap health checks by default and records them beside the map."""
    import torch

    import xaiready as xr
    from xaiready.testing import zoo

    torch.manual_seed(0)
    model, x = zoo.build("HealthyCNN"), zoo.example_input()
    attr = xr.explain(model, x, "saliency", xr.targets.Class(0))
    names = {f["name"] for f in attr.info["health"]}
    assert {"map-values", "saturated-output", "target-sensitivity"} <= names
    assert "health" not in xr.explain(model, x, "saliency", xr.targets.Class(0), sanity="off").info
    rounded = xr.explain(zoo.build("RoundedOutput"), x, "saliency", xr.targets.Class(0), sanity="off", verify=False)
    flagged = xr.explain(zoo.build("RoundedOutput"), x, "saliency", xr.targets.Class(0), verify=False)
    assert not any("map-values" in w for w in rounded.warnings)
    assert any(w.startswith("map-values") and "all zero" in w for w in flagged.warnings)
