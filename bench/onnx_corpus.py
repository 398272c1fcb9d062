"""Coverage corpus: torchvision models (random weights) exported to ONNX, converted back, verified.

    python bench/onnx_corpus.py [--models resnet18,vgg11] [--exporters legacy13,legacy17,dynamo]

For each model x exporter: export, ``xr.load`` (which converts and verifies on random inputs), then the
readiness check on a fresh input (conversion equivalence on that input, gradient checks with finite
differences). Prints one row per export with the canonical passes that changed the graph before
conversion (``xaiready.convert.canonical``), the share converted and verified, how often each pass
was needed, and the failures with their reasons. The tests import ``run_one`` from here.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

MODELS = ["resnet18", "resnet50", "mobilenet_v3_small", "efficientnet_b0", "efficientnet_b1", "vgg11",
          "densenet121", "squeezenet1_1", "shufflenet_v2_x0_5", "regnet_x_400mf", "convnext_tiny", "vit_b_16",
          "fcn_resnet50", "deeplabv3_mobilenet_v3_large", "swin_t"]
EXPORTERS = ["legacy13", "legacy17", "dynamo"]
SIZE = {"vgg11": 224}  # the legacy exporter needs 7x7 features before VGG's adaptive pool; others 64x64


@dataclass
class Row:
    model: str
    exporter: str
    status: str  # verified | refused | export-failed | error
    reason: str = ""
    seconds: float = 0.0
    verdict: str | None = None
    passes: str = ""  # the canonical passes that changed something, "name count, ..."


def build(name: str):
    import torch
    import torchvision

    torch.manual_seed(0)
    if name.startswith(("fcn_", "deeplabv3_")):
        model = getattr(torchvision.models.segmentation, name)(weights=None, weights_backbone=None,
                                                               num_classes=5, aux_loss=False)
    elif name.startswith("vit_"):
        model = getattr(torchvision.models, name)(weights=None, image_size=64)
        # torchvision zero-initialises ViT's head: the output would not depend on the input at all.
        torch.nn.init.normal_(model.heads.head.weight, std=0.02)
    else:
        model = getattr(torchvision.models, name)(weights=None)
    return model.eval()


def export(model, path: Path, exporter: str, size: int) -> None:
    import torch

    x = torch.randn(1, 3, size, size)
    kwargs = {"dynamo": True} if exporter == "dynamo" else {"dynamo": False, "opset_version": int(exporter[-2:])}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), **kwargs)


def run_one(name: str, exporter: str, folder: Path) -> Row:
    import numpy as np

    import xaiready as xr
    from xaiready.errors import XaiReadyError
    from xaiready.readiness.checks import run_check

    started = time.perf_counter()
    size = SIZE.get(name, 64)
    path = Path(folder) / f"{name}-{exporter}" / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        export(build(name), path, exporter, size)
    except Exception as exc:  # any exporter failure is a fact about the exporter, recorded as such
        return Row(name, exporter, "export-failed", _first(exc), time.perf_counter() - started)
    try:
        handle = xr.load(path)
        detail = next((c.detail for c in handle.extra_checks if c.name == "conversion"), "not converted")
        passes = changed_passes(detail)
        if handle.source.converted_from != "onnx":
            return Row(name, exporter, "refused", detail, time.perf_counter() - started, passes=passes)
        x = np.random.default_rng(1).standard_normal((1, 3, size, size)).astype(np.float32)
        report = run_check(handle, x, fd_directions=2)
    except XaiReadyError as exc:
        return Row(name, exporter, "error", exc.one_line(), time.perf_counter() - started)
    checks = {c.name: c for c in report.checks}
    equal = checks.get("conversion-equivalence")
    seconds = time.perf_counter() - started
    if equal is None or equal.status != "pass":
        return Row(name, exporter, "refused", equal.detail if equal else "no equivalence check", seconds,
                   passes=passes)
    if report.gradient["status"] != "ok":
        return Row(name, exporter, "refused", f"gradient {report.gradient['status']}", seconds, report.verdict,
                   passes)
    return Row(name, exporter, "verified", equal.detail, seconds, report.verdict, passes)


def changed_passes(detail: str) -> str:
    """The canonical passes of a conversion check's detail that changed something ('-' if none)."""
    found = re.search(r"canonical passes: ([^;)]*)", detail)
    if not found:
        return ""
    changed = [p.strip() for p in found.group(1).split(",") if re.search(r" [1-9]\d*( \(|$)", p.strip())]
    return ", ".join(changed) or "-"


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:160] if text else ''}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--exporters", default=",".join(EXPORTERS))
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            for exporter in args.exporters.split(","):
                row = run_one(name, exporter, Path(tmp))
                rows.append(row)
                print(f"{name:32} {exporter:9} {row.status:14} {row.verdict or '':15} {row.seconds:6.1f}s  "
                      f"[{row.passes}] {row.reason[:110]}", flush=True)
                for child in (Path(tmp) / f"{name}-{exporter}").glob("*"):
                    child.unlink()  # keep the disk footprint to one export at a time
    exported = [r for r in rows if r.status != "export-failed"]
    verified = [r for r in exported if r.status == "verified"]
    print(f"\nconverted and verified: {len(verified)}/{len(exported)} exports "
          f"({100 * len(verified) / max(1, len(exported)):.0f}%); "
          f"{len(rows) - len(exported)} export(s) failed in torch.onnx itself")
    needed: dict[str, int] = {}
    for r in exported:
        for part in r.passes.split(", "):
            if part not in ("", "-"):
                name = part.split(" ")[0]  # pass names have no spaces
                needed[name] = needed.get(name, 0) + 1
    print("canonical passes that changed the graph: "
          + (", ".join(f"{k} in {v} export(s)" for k, v in needed.items()) or "none"))
    for r in rows:
        if r.status != "verified":
            print(f"  {r.status}: {r.model} / {r.exporter}: {r.reason}")
    return 0 if len(verified) == len(exported) else 1


if __name__ == "__main__":
    sys.exit(main())
