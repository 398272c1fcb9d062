import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from onnx_helpers import EXPORTERS, export, small_net  # noqa: E402


@pytest.fixture(scope="session")
def exports(tmp_path_factory):
    """The same SmallNet exported with each exporter, each in its own folder."""
    out = {}
    for exporter in EXPORTERS:
        folder = tmp_path_factory.mktemp(exporter)
        out[exporter] = export(small_net(), folder / "model.onnx", exporter)
    return out
