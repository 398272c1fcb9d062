"""Exporter corpus: ONNX graphs from every exporter family (random weights), converted and verified.

    python bench/onnx_corpus_exporters.py [--families paddle,tf2onnx,torch-rnn,timm,hf,quantized]
                                          [--only NAME,...] [--json results.json]

Families (each export is built here, nothing is downloaded):
  paddle     paddle2onnx exports of paddle.vision.models and a CRNN-style OCR recogniser (Conv + BiLSTM)
  tf2onnx    tf2onnx exports of keras.applications models (NHWC graphs)
  torch-rnn  torch.onnx (legacy opset 13/17 and dynamo) exports of CNN + LSTM/GRU recognisers
  timm       torch.onnx exports of timm models (legacy opset 17 and dynamo)
  hf         torch.onnx exports of transformers vision models (ViT, ResNet, ConvNeXt)
  quantized  onnxruntime quantize_dynamic / quantize_static of some of the above: must stay inference-only

For each graph: ``xr.load`` (convert + verify against ONNX Runtime on random inputs, gradients against
its finite differences), then ``xr.check`` on a fresh input, timed together as "check s". A converted
graph is also measured independently here: its input gradient of the checked score against central
finite differences of ONNX Runtime on the original graph (best of three step sizes, three directions),
so there is no false ``full``. Paddle and TensorFlow exports run in their own processes (they do not
share one with torch's compiler stack). Prints the coverage table exporter x model and the share
converted and verified per family; every graph that is not converted names its unsupported ops.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "onnx"))  # the CRNN recogniser shared with the tests

PADDLE_MODELS = ["resnet18", "mobilenet_v3_small", "mobilenet_v2", "shufflenet_v2_x0_25", "squeezenet1_1",
                 "lenet", "crnn"]
KERAS_MODELS = ["MobileNetV2", "MobileNetV3Small", "EfficientNetB0", "DenseNet121", "ResNet50", "NASNetMobile"]
TIMM_MODELS = ["efficientnet_b0", "mobilenetv3_small_100", "resnet18", "convnext_atto", "regnetx_002",
               "ghostnet_100", "vit_tiny_patch16_224", "deit_tiny_patch16_224"]
HF_MODELS = ["vit", "resnet", "convnext"]
RNN_MODELS = ["crnn-lstm", "crnn-gru", "crnn-lstm-uni"]
TORCH_EXPORTERS = ["legacy13", "legacy17", "dynamo"]


@dataclass
class Row:
    family: str
    model: str
    exporter: str
    status: str  # verified | refused | inference-only (quantized, as required) | export-failed | error
    seconds: float = 0.0  # load (convert + verify) + check
    verdict: str = ""
    ort_fd: str = ""  # the independent gradient check against ONNX Runtime's finite differences
    reason: str = ""
    unsupported: str = ""
    passes: str = ""
    layout: str = ""
    expect_convert: bool = True  # False for quantized graphs


# ---- exporters ---------------------------------------------------------------------------------------------
PADDLE_SCRIPT = r'''
import sys, warnings
warnings.simplefilter("ignore")
import paddle
name, out, opset = sys.argv[1], sys.argv[2], int(sys.argv[3])
paddle.seed(0)
if name == "crnn":
    class CRNN(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.conv = paddle.nn.Sequential(
                paddle.nn.Conv2D(3, 8, 3, padding=1), paddle.nn.ReLU(), paddle.nn.MaxPool2D(2),
                paddle.nn.Conv2D(8, 16, 3, padding=1), paddle.nn.ReLU(), paddle.nn.AdaptiveAvgPool2D((1, None)))
            self.rnn = paddle.nn.LSTM(16, 12, num_layers=2, direction="bidirect")
            self.head = paddle.nn.Linear(24, 7)
        def forward(self, x):
            return self.head(self.rnn(self.conv(x).squeeze(2).transpose([0, 2, 1]))[0])
    model, shape = CRNN(), [1, 3, 32, 64]
elif name == "lenet":
    model, shape = paddle.vision.models.LeNet(), [1, 1, 28, 28]
else:
    model, shape = getattr(paddle.vision.models, name)(num_classes=10), [1, 3, 64, 64]
for layer in model.sublayers():  # batch-norm statistics of real data, as trained models have them
    if isinstance(layer, paddle.nn.layer.norm._BatchNormBase):
        layer._momentum = 0.0
model.train()
with paddle.no_grad():
    model(paddle.randn([16] + shape[1:]))
model.eval()
spec = [paddle.static.InputSpec(shape=shape, dtype="float32", name="x")]
paddle.onnx.export(model, out[:-len(".onnx")], input_spec=spec, opset_version=opset)
'''

KERAS_SCRIPT = r'''
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import keras, tensorflow as tf, tf2onnx
name, out, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
keras.utils.set_random_seed(0)
kwargs = dict(weights=None, input_shape=(size, size, 3), classes=10)
if name in ("MobileNetV2", "MobileNetV3Small"):
    kwargs["alpha"] = 0.35 if name == "MobileNetV2" else 0.75
model = getattr(keras.applications, name)(**kwargs)
for layer in model.layers:  # batch-norm statistics of real data, as trained models have them
    if isinstance(layer, keras.layers.BatchNormalization):
        layer.momentum = 0.0
model(keras.random.normal((16, size, size, 3), seed=1), training=True)
spec = (tf.TensorSpec((None, size, size, 3), tf.float32, name="input"),)
tf2onnx.convert.from_keras(model, input_signature=spec, opset=13, output_path=out)
'''
KERAS_SIZE = {"NASNetMobile": 224}  # NASNet fixes its input at 224 without weights' top; the rest at 64


def _subprocess(script: str, *args: str, timeout: int = 900) -> None:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    # from a file: paddle's tracing reads the layers' source, which code given with -c has not
    script_path = Path(args[1]).with_name("export_script.py")
    script_path.write_text(script)
    done = subprocess.run([sys.executable, str(script_path), *args], capture_output=True, text=True,
                          timeout=timeout, env=env)
    if done.returncode != 0:
        tail = [line for line in (done.stderr + done.stdout).strip().splitlines()
                if line.strip() and "[WARNING]" not in line and "[INFO]" not in line]
        raise RuntimeError(tail[-1][:200] if tail else f"exit {done.returncode}")


def _torch_export(model, x, path: Path, exporter: str) -> None:
    import torch

    kwargs = {"dynamo": True} if exporter == "dynamo" else {"dynamo": False, "opset_version": int(exporter[-2:])}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), **kwargs)


def _calibrated(model, shape):
    """``model`` with batch-norm statistics measured on random data (in eval mode after): random weights
    with the freshly initialised statistics (mean 0, variance 1) shrink the output of deep networks
    below float32's resolution, which no trained model does."""
    import torch

    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches below
    if norms:
        model.train()
        with torch.no_grad():
            for _ in range(2):
                model(torch.randn(16, *shape[1:]))
    return model.eval()


def _timm(name: str):
    import timm
    import torch

    torch.manual_seed(0)
    kwargs = {"img_size": 64} if name.startswith(("vit_", "deit_")) else {}
    model = timm.create_model(name, pretrained=False, num_classes=10, **kwargs)
    return _calibrated(model, (1, 3, 64, 64)), torch.randn(1, 3, 64, 64)


def _hf(name: str):
    import torch
    import transformers as tr

    torch.manual_seed(0)
    if name == "vit":
        config = tr.ViTConfig(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                              intermediate_size=128, num_labels=10)
        model = tr.ViTForImageClassification(config)
    elif name == "resnet":
        model = tr.ResNetForImageClassification(tr.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32, 64, 64],
                                                                depths=[1, 1, 1, 1], num_labels=10))
    else:
        model = tr.ConvNextForImageClassification(tr.ConvNextConfig(hidden_sizes=[16, 32, 64, 64],
                                                                    depths=[1, 1, 1, 1], num_labels=10))

    class Logits(torch.nn.Module):  # the ModelOutput's logits, as exported classifiers return them
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(pixel_values=x).logits

    return _calibrated(Logits(model), (1, 3, 32, 32)), torch.randn(1, 3, 32, 32)


def _rnn(name: str):
    import torch
    from recurrent_cases import crnn

    kind = "GRU" if "gru" in name else "LSTM"
    return crnn(kind, bidirectional=not name.endswith("-uni")), torch.randn(1, 1, 16, 32)


def builds(families: list[str]):
    """(family, model, exporter, make(path), expect_convert, task) for every export of the corpus."""
    out = []
    if "paddle" in families:
        for name in PADDLE_MODELS:
            out.append(("paddle", name, "paddle2onnx-13",
                        lambda p, n=name: _subprocess(PADDLE_SCRIPT, n, str(p), "13"), True,
                        "sequence" if name == "crnn" else None))
    if "tf2onnx" in families:
        for name in KERAS_MODELS:
            out.append(("tf2onnx", name, "tf2onnx-13",
                        lambda p, n=name: _subprocess(KERAS_SCRIPT, n, str(p), str(KERAS_SIZE.get(n, 64))), True,
                        None))
    for family, names, make, exporters, task in (
            ("torch-rnn", RNN_MODELS, _rnn, TORCH_EXPORTERS, "sequence"),
            ("timm", TIMM_MODELS, _timm, ["legacy17", "dynamo"], None),
            ("hf", HF_MODELS, _hf, ["legacy17", "dynamo"], None)):
        if family in families:
            for name in names:
                for exporter in exporters:
                    out.append((family, name, exporter,
                                lambda p, n=name, e=exporter, m=make: _torch_export(*m(n), p, e), True, task))
    if "quantized" in families:
        for base, make, task in (("crnn-lstm", lambda p: _torch_export(*_rnn("crnn-lstm"), p, "legacy17"), "sequence"),
                                 ("resnet18", lambda p: _torch_export(*_timm("resnet18"), p, "legacy17"), None),
                                 ("mobilenetv3_small_100",
                                  lambda p: _torch_export(*_timm("mobilenetv3_small_100"), p, "legacy17"), None)):
            for scheme in ("dynamic", "static-qdq", "static-qoperator"):
                if base == "crnn-lstm" and scheme != "dynamic":
                    continue
                out.append(("quantized", base, scheme, lambda p, m=make, s=scheme: _quantize(m, p, s), False, task))
    return out


def _quantize(make, path: Path, scheme: str) -> None:
    import numpy as np
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    float_path = path.with_name("float.onnx")
    make(float_path)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        quant_pre_process(str(float_path), str(float_path))  # onnxruntime's advice before quantizing
    graph_input = onnx.load(str(float_path)).graph.input[0]
    shape = [d.dim_value or 1 for d in graph_input.type.tensor_type.shape.dim]

    class Calibration:
        def __init__(self):
            self.batches = iter([{graph_input.name: np.random.default_rng(i).standard_normal(shape).astype(np.float32)}
                                 for i in range(4)])

        def get_next(self):
            return next(self.batches, None)

    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        import logging

        logging.getLogger().setLevel(logging.ERROR)
        if scheme == "dynamic":
            quantize_dynamic(str(float_path), str(path), weight_type=QuantType.QInt8)
        else:
            fmt = QuantFormat.QDQ if scheme == "static-qdq" else QuantFormat.QOperator
            quantize_static(str(float_path), str(path), Calibration(), quant_format=fmt)


# ---- measurement -------------------------------------------------------------------------------------------
def measure(family, name, exporter, make, expect_convert, task, folder: Path) -> Row:
    import numpy as np

    import xaiready as xr
    from onnx_corpus import changed_passes
    from xaiready.errors import XaiReadyError

    row = Row(family, name, exporter, "error", expect_convert=expect_convert)
    path = folder / f"{family}-{name}-{exporter}" / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        make(path)
    except Exception as exc:  # any exporter failure is a fact about the exporter, recorded as such
        row.status, row.reason = "export-failed", f"{type(exc).__name__}: {str(exc).strip()[:160]}"
        return row
    started = time.perf_counter()
    try:
        handle = xr.load(path)
        conversion = next((c for c in handle.extra_checks if c.name == "conversion"), None)
        row.layout = handle.layout
        reference = handle.reference.backend if getattr(handle, "reference", None) is not None else None
        output = reference.outputs[reference.output_index].name if reference is not None else None
        row.passes = changed_passes(conversion.detail) if conversion else ""
        shape = handle.backend.example_shape()
        x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
        report = xr.check(handle, x, task=task)
        row.seconds = time.perf_counter() - started
        row.verdict = report.verdict
    except XaiReadyError as exc:
        row.reason, row.seconds = exc.one_line(), time.perf_counter() - started
        return row
    if handle.source.converted_from != "onnx":
        row.status = "refused" if expect_convert else "inference-only"
        row.reason = conversion.detail if conversion else "not converted"
        row.unsupported = _unsupported(path)
        return row
    checks = {c.name: c for c in report.checks}
    equal = checks.get("conversion-equivalence")
    if equal is not None and equal.status != "pass":
        row.status, row.reason = "refused", equal.detail
        return row
    row.ort_fd = ort_finite_differences(handle, path, x, task, output)
    ok = not row.ort_fd.startswith("disagree")
    row.status = "verified" if ok and expect_convert else "refused"
    row.reason = "" if ok else f"independent check: {row.ort_fd}"
    if not expect_convert:
        row.reason = "a quantized graph was converted: " + row.reason
    return row


def _unsupported(path: Path) -> str:
    import onnx

    from xaiready.convert import gapfill
    from xaiready.convert.onnx_to_torch import unsupported_ops
    from xaiready.convert.passes import prepare

    gapfill.install()
    model = prepare(onnx.load(str(path)), unsupported_ops)[0]
    return ", ".join(unsupported_ops(model)) or "-"


def ort_finite_differences(handle, path: Path, x, task, output: str | None) -> str:
    """The converted gradient of the checked score against central finite differences of ONNX Runtime
    on the original graph (a fresh session on the file, nothing canonicalised), by the project's
    finite-difference rule (``readiness.probes``: steps sized per direction, kinks and noise told apart)."""
    import numpy as np

    import xaiready as xr
    from xaiready.convert.handle import _same_differences
    from xaiready.readiness.probes import finite_difference_check, gradient_correctness
    from xaiready.targets import for_task, infer_task

    original = xr.load(path, convert=False, output=output)
    first = None
    # An inconclusive point (ReLU kinks under every step, or a gradient below float32 resolution) is
    # measured again at two other random inputs; a conclusive disagreement anywhere is a failure.
    for attempt, sample in enumerate([x] + [np.random.default_rng(50 + i).standard_normal(x.shape).astype(x.dtype)
                                            for i in range(2)]):
        out = handle.forward(sample)
        target = handle.resolve(for_task(task or infer_task(out.shape, fallback="regression"), None), sample)
        grad = handle.vjp(sample, target).input_grad
        fd = finite_difference_check(original, sample, target, grad, n_random=3)
        if not fd.ok:
            # float32 differences across kinks can converge to a wrong slope; the gradient is then
            # measured on the float64 twin, and the converted function shown to be ORT's (equal differences)
            twin, _ = gradient_correctness(handle, sample, target, grad, n_random=3)
            same = _same_differences(handle, original, sample, target, grad)
            if twin.ok and twin.conclusive and same is None:
                return (f"agree on the float64 twin, whose differences equal ONNX Runtime's ({fd.directions} "
                        f"directions; ONNX Runtime's float32 differences alone disagreed: {fd.detail[:100]})")
            return f"disagree: {fd.detail}" + (f"; {same}" if same else "")
        if fd.conclusive:
            return f"agree ({fd.directions} directions" + (f", at random input {attempt + 1})" if attempt else ")")
        first = first or fd.detail
    return f"inconclusive at 3 inputs: {first[:160]}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default="paddle,tf2onnx,torch-rnn,timm,hf,quantized")
    parser.add_argument("--only", help="comma-separated model names")
    parser.add_argument("--json", help="write the rows as JSON here")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))
    rows = []
    only = set(args.only.split(",")) if args.only else None
    with tempfile.TemporaryDirectory() as tmp:
        for family, name, exporter, make, expect, task in builds(args.families.split(",")):
            if only and name not in only:
                continue
            try:
                row = measure(family, name, exporter, make, expect, task, Path(tmp))
            except Exception as exc:  # noqa: BLE001 - a crash is a row of the table, not the end of the run
                row = Row(family, name, exporter, "error", reason=f"{type(exc).__name__}: {str(exc)[:160]}",
                          expect_convert=expect)
            rows.append(row)
            print(f"{family:10} {name:24} {exporter:17} {row.status:15} {row.verdict:15} {row.seconds:6.1f}s "
                  f"{row.layout:5} {row.ort_fd[:44]:44} [{row.passes}] {(row.unsupported or row.reason)[:120]}",
                  flush=True)
            for child in (Path(tmp) / f"{family}-{name}-{exporter}").glob("*"):
                child.unlink()
    summary(rows)
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=1))
    standard = [r for r in rows if r.expect_convert and r.status != "export-failed"]
    verified = [r for r in standard if r.status == "verified"]
    quantized_ok = all(r.status == "inference-only" for r in rows if not r.expect_convert and r.status != "export-failed")
    return 0 if quantized_ok and len(verified) >= 0.95 * len(standard) else 1


def summary(rows: list[Row]) -> None:
    print("\nconverted and verified, per family (standard-op exports):")
    for family in dict.fromkeys(r.family for r in rows):
        mine = [r for r in rows if r.family == family and r.status != "export-failed"]
        failed = sum(1 for r in rows if r.family == family and r.status == "export-failed")
        if family == "quantized":
            kept = sum(1 for r in mine if r.status == "inference-only")
            print(f"  {family:10} {kept}/{len(mine)} stay inference-only (required){f'; {failed} export(s) failed' if failed else ''}")
            continue
        ok = sum(1 for r in mine if r.status == "verified")
        print(f"  {family:10} {ok}/{len(mine)} ({100 * ok / max(1, len(mine)):.0f}%)"
              + (f"; {failed} export(s) failed in the exporter itself" if failed else ""))
    standard = [r for r in rows if r.expect_convert and r.status != "export-failed"]
    ok = sum(1 for r in standard if r.status == "verified")
    print(f"  all        {ok}/{len(standard)} ({100 * ok / max(1, len(standard)):.0f}%)")
    for r in rows:
        if r.status not in ("verified", "inference-only"):
            print(f"  {r.status}: {r.family}/{r.model}/{r.exporter}: {r.unsupported or ''} {r.reason}")


if __name__ == "__main__":
    sys.exit(main())
