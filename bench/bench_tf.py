"""TensorFlow backend: Grad-CAM and Integrated Gradients, ours / plain GradientTape; prints ratios.

    python bench/bench_tf.py                    # MobileNetV2 (random weights), batch 8, 224x224
    python bench/bench_tf.py --repeats 2 --ig-steps 8 --size 160   # a reduced run on a busy machine

Baselines are what one writes by hand in eager TensorFlow:

* ``fb``: one forward + backward to the input with ``tf.GradientTape`` (the unit of the ratios);
* ``tape gradcam``: the Keras-tutorial Grad-CAM: ``keras.Model(inputs, [layer.output, model.output])``
  under a tape, gradient to the layer, channel means, weighted sum, ReLU;
* ``tape IG``: the same path points in the same chunks as ours (``n_steps * batch`` rows, ``batch``
  rows per pass), gradients summed by hand.

Ours runs through the public API on a reused handle; the capability check (one readiness measurement
per handle and input shape) is paid in the warm-up and timed on its own line. Timings are medians of
interleaved runs (baseline, ours, baseline, ours, ...), so background load hits both sides alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402

import xaiready as xr  # noqa: E402
from xaiready.api import as_handle  # noqa: E402
from xaiready.targets import Class  # noqa: E402

K = 3  # explained class
LAYER = "out_relu"  # MobileNetV2's last feature map


def interleaved(fns: dict, repeats: int) -> dict:
    for fn in fns.values():
        fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ig-steps", type=int, default=16)
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(args.size, args.size, 3))
    x = np.random.default_rng(0).standard_normal((args.batch, args.size, args.size, 3)).astype(np.float32)
    xt = tf.constant(x)
    handle = as_handle(model)

    def fb():
        t = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(t)
            score = tf.reduce_sum(model(t, training=False)[:, K])
        return tape.gradient(score, t).numpy()

    grad_model = keras.Model(model.inputs, [model.get_layer(LAYER).output, model.output])

    def tape_gradcam():
        with tf.GradientTape() as tape:
            acts, out = grad_model(xt, training=False)
            score = tf.reduce_sum(out[:, K])
        grads = tape.gradient(score, acts)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * acts, axis=-1))
        return tf.image.resize(cam[..., None], (args.size, args.size)).numpy()

    steps, n = args.ig_steps, args.batch
    alphas = (np.arange(steps, dtype=np.float32) + 0.5) / steps

    def tape_ig():
        total = np.zeros_like(x, dtype=np.float64)
        rows = np.repeat(x, steps, axis=0) * np.tile(alphas, n)[:, None, None, None]
        for start in range(0, len(rows), n):
            t = tf.constant(rows[start:start + n])
            with tf.GradientTape() as tape:
                tape.watch(t)
                score = tf.reduce_sum(model(t, training=False)[:, K])
            g = tape.gradient(score, t).numpy().astype(np.float64)
            idx = np.arange(start, min(len(rows), start + n)) // steps
            np.add.at(total, idx, g / steps)
        return total * x

    t0 = time.perf_counter()
    xr.explain(handle, x, "gradcam", Class(K), layer=LAYER)
    check_s = time.perf_counter() - t0
    cam = interleaved({"fb": fb, "tape gradcam": tape_gradcam,
                       "ours gradcam": lambda: xr.explain(handle, x, "gradcam", Class(K), layer=LAYER)},
                      args.repeats)
    ig = interleaved({"fb": fb, "tape IG": tape_ig,
                      "ours IG": lambda: xr.explain(handle, x, "integrated-gradients", Class(K), n_steps=steps,
                                                    integration="riemann_middle", batch_size=n)},
                     max(1, args.repeats // 2))

    print(f"MobileNetV2 (random weights), batch {n}, {args.size}x{args.size}, TF {tf.__version__}, "
          f"{os.cpu_count()} CPUs; medians of {args.repeats} interleaved runs")
    print(f"first gradcam call incl. capability check: {check_s:.2f} s")
    print(f"{'':24s}{'seconds':>10s}{'/ fb':>8s}{'/ tape':>8s}")
    for label, t, base in (("fb (GradientTape)", cam["fb"], None), ("tape gradcam", cam["tape gradcam"], None),
                           ("ours gradcam", cam["ours gradcam"], cam["tape gradcam"])):
        print(f"{label:24s}{t:10.3f}{t / cam['fb']:8.2f}" + (f"{t / base:8.2f}" if base else ""))
    for label, t, base in ((f"tape IG ({steps} steps)", ig["tape IG"], None),
                           (f"ours IG ({steps} steps)", ig["ours IG"], ig["tape IG"])):
        print(f"{label:24s}{t:10.3f}{t / ig['fb']:8.2f}" + (f"{t / base:8.2f}" if base else ""))
    print(f"ratio ours/plain: gradcam {cam['ours gradcam'] / cam['tape gradcam']:.2f} (target <= 1.1), "
          f"gradcam / fb {cam['ours gradcam'] / cam['fb']:.2f}, IG {ig['ours IG'] / ig['tape IG']:.2f}")


if __name__ == "__main__":
    main()
