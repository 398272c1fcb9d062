"""An internal error has its own exit code (70, EX_SOFTWARE), apart from 1 (--require not met)."""

import subprocess
import sys

from xaiready import cli


def test_internal_error_exits_70_with_one_line(monkeypatch, capsys):
    from xaiready.commands import check

    def broken(_args):
        raise KeyError("a bug in xaiready")

    monkeypatch.setattr(check, "run", broken)  # our own command, broken on purpose
    assert cli.main(["check", "model.pt"]) == cli.INTERNAL_ERROR == 70
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error KeyError" in err and "report" in err
    assert "Traceback" not in err


def test_exit_codes_are_documented_in_help():
    out = subprocess.run([sys.executable, "-m", "xaiready.cli", "--help"], capture_output=True, text=True).stdout
    assert "70  internal error" in out and "1  --require not met" in out
