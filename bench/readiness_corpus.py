"""The readiness corpus as a table: verdict, gradient status and break (cause @ location) for every
architecture of tests/corpus at float32/float16/bfloat16, and every break cause injected into the
architectures tests/corpus/test_corpus.py breaks. Marks each cell that differs from what the check
must find. Run: ``make readiness-corpus`` (about 10 minutes on 2 cores).
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
warnings.filterwarnings("ignore")

import xaiready as xr  # noqa: E402
from corpus import architectures as A  # noqa: E402
from corpus import breaks as B  # noqa: E402
from corpus.test_corpus import BROKEN_ARCHS  # noqa: E402

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _cell(report) -> str:
    found = report["gradient"]["break"] or {}
    where = f" {found['cause']} @ {found['location']}" if found else ""
    return f"{report['verdict']} / {report['gradient']['status']}{where}"


def main() -> None:
    wrong, started = 0, time.perf_counter()
    print("| architecture | " + " | ".join(DTYPES) + " | default CAM layer |")
    print("|---|" + "---|" * (len(DTYPES) + 1))
    for name in A.BUILDERS:
        cells, layer = [], ""
        for torch_dtype in DTYPES.values():
            model, shape = A.build(name, dtype=torch_dtype)
            report = xr.check(model, A.example_input(shape)).to_dict()
            ok = report["gradient"]["status"] == "ok" and (name not in A.CNNS or report["verdict"] == "full")
            wrong += not ok
            cells.append(_cell(report) + ("" if ok else " **(wrong)**"))
            layer = layer or str(report["cam"]["default_layer"])
        print(f"| {name} | " + " | ".join(cells) + f" | `{layer}` |", flush=True)
    print("\n| architecture | " + " | ".join(B.CAUSES) + " |")
    print("|---|" + "---|" * len(B.CAUSES))
    for name in BROKEN_ARCHS:
        cells = []
        for cause in B.CAUSES:
            model, shape = A.build(name)
            x = A.example_input(shape)
            model, expected = B.inject(model, cause, x)
            report = xr.check(model, x).to_dict()
            found = report["gradient"]["break"] or {}
            got = (report["verdict"], report["gradient"]["status"], found.get("cause"), found.get("location"))
            where = expected[3] if isinstance(expected[3], tuple) else (expected[3],)
            right = got[:3] == expected[:3] and any(str(got[3]) == w or str(got[3]).startswith(w + ".") for w in where)
            wrong += not right
            cells.append(f"{got[1]}: {got[2]}" + ("" if right else f" @ {got[3]} **(wrong)**"))
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    print(f"\n{wrong} wrong cell(s); {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
