"""The `check` command end to end: JSON contract, exit codes, one-line errors, fast --help."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from xaiready.cli import main
from xaiready.testing import zoo

ZOO = "xaiready.testing.zoo"


@pytest.fixture
def files(tmp_path):
    for name in ("HealthyCNN", "DetachBetweenBlocks", "SegmentationNet"):
        torch.save(zoo.build(name).state_dict(), tmp_path / f"{name}.pt")
    np.save(tmp_path / "x.npy", zoo.example_input()[0])  # (3, 32, 32): a batch axis is added
    return tmp_path


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_check_json_follows_the_contract(files, capsys):
    code, out, err = _run(capsys, "check", files / "HealthyCNN.pt", "--arch", f"{ZOO}:HealthyCNN",
                          "--input", files / "x.npy", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["model"] == {"path": str(files / "HealthyCNN.pt"), "format": "pytorch-state-dict",
                          "framework": "torch", "converted_from": None}
    assert d["verdict"] == "full" and d["error"] is None
    assert set(d["gradient"]) >= {"status", "input_grad_norm", "break"}
    assert set(d["cam"]) >= {"status", "layers", "default_layer", "reason"}
    assert all(set(c) == {"name", "status", "detail"} for c in d["checks"])
    assert d["input_shape"] == [1, 3, 32, 32]


def test_require_sets_exit_code(files, capsys):
    args = ["check", files / "DetachBetweenBlocks.pt", "--arch", f"{ZOO}:DetachBetweenBlocks",
            "--input-shape", "1,3,32,32"]
    code, out, err = _run(capsys, *args)
    assert code == 0 and "inference-only" in out and "detach" in out
    code, out, err = _run(capsys, *args, "--require", "gradient-only")
    assert code == 1 and err.count("\n") == 1 and "does not meet --require" in err


def test_segmentation_target_from_cli(files, capsys):
    code, out, _ = _run(capsys, "check", files / "SegmentationNet.pt", "--arch", f"{ZOO}:SegmentationNet",
                        "--input-shape", "1,3,32,32", "--task", "segmentation", "--target", "2", "--json")
    d = json.loads(out)
    assert code == 0 and d["target"]["k"] == 2 and d["task"] == "segmentation"


@pytest.mark.parametrize("argv,code,phrase", [
    (["check", "{d}/missing.pt"], 3, "no such file"),
    (["check", "{d}/HealthyCNN.pt"], 3, "--arch"),
    (["check", "{d}/HealthyCNN.pt", "--arch", "nosuchmodule:Net"], 3, "nosuchmodule"),
    (["check", "{d}/HealthyCNN.pt", "--arch", f"{ZOO}:HealthyCNN", "--input-shape", "1,4,32,32"], 6, "could not run"),
    (["check", "{d}/HealthyCNN.pt", "--arch", f"{ZOO}:HealthyCNN", "--input-shape", "a,b"], 2, "input-shape"),
    (["check", "{d}/HealthyCNN.pt", "--arch", f"{ZOO}:HealthyCNN", "--input-shape", "1,3,32,32",
      "--layer", "nope"], 2, "no layer 'nope'"),
    (["check", "{d}/HealthyCNN.pt", "--arch", f"{ZOO}:HealthyCNN", "--input-shape", "1,3,32,32",
      "--target", "9"], 2, "out of range"),
    (["check", "{d}/HealthyCNN.pt", "--bogus"], 2, "unrecognized"),
])
def test_errors_are_one_line_with_documented_exit_codes(files, capsys, argv, code, phrase):
    got, out, err = _run(capsys, *[a.format(d=files) for a in argv])
    assert got == code, err
    assert err.count("\n") == 1 and err.startswith("error:") and "Traceback" not in err
    assert phrase in err


def test_json_error_object_on_refusal(files, capsys):
    torch.save(zoo.build("HealthyCNN"), files / "pickled.pt")
    code, out, err = _run(capsys, "check", files / "pickled.pt", "--json")
    assert code == 4
    d = json.loads(out)
    assert d["error"]["kind"] == "untrusted" and "verdict" not in d
    assert d["model"]["format"] == "pytorch-eager"


def test_help_does_not_import_frameworks():
    code = ("import sys; from xaiready.cli import build_parser; build_parser().format_help(); "
            "bad = [m for m in ('torch', 'tensorflow', 'onnxruntime') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    result = subprocess.run([sys.executable, "-m", "xaiready.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "check" in result.stdout and "exit codes" in result.stdout


def test_public_api_is_locked():
    import xaiready

    # Exactly these names: a name added or dropped is an API change and must be made here on purpose.
    assert sorted(xaiready.__all__) == ["ModelHandle", "Report", "__version__", "as_handle", "check", "errors",
                                        "evaluate", "explain", "load", "targets"]
    assert len(set(xaiready.__all__)) == len(xaiready.__all__)
    for name in xaiready.__all__:
        assert getattr(xaiready, name) is not None


def test_explain_is_the_function_even_after_the_methods_load():
    """``xr.explain`` is the API function with its real signature, whatever was imported before."""
    import inspect
    import types

    import xaiready as xr
    from xaiready.methods import load_methods

    load_methods()
    assert isinstance(xr.explain, types.FunctionType)
    assert list(inspect.signature(xr.explain).parameters)[:5] == ["model", "x", "method", "target", "layer"]
    assert "Explain ``target``" in (xr.explain.__doc__ or "")
