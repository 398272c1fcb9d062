"""The Ray engine: the same batches, on Ray Data's ``map_batches`` with a pool of actors.

Each actor loads the model once and runs ``pipeline.process_batch`` on one run batch per call, with
gradients on (Ray's inference examples use ``torch.inference_mode``, in which attribution fails);
with GPUs in the cluster and a CUDA ``--device``, each actor holds one. The driver iterates the
results as they stream out (bounded by Ray Data's backpressure) and writes them to the store, so the
rows are the local engine's. Tested with Ray 2.60 (``compute=ActorPoolStrategy(size=N)``; older
releases took ``concurrency=N`` instead, see ``pyproject.toml`` for the supported range).
"""

from __future__ import annotations

import json
import logging
import pickle

import numpy as np

from .dataset import Item, as_json, from_json


class BatchWorker:
    """A Ray Data actor: one model, then run batches (one row per run batch) through the pipeline."""

    def __init__(self, config: dict):
        from .pipeline import Context

        self.ctx = Context(config)

    def __call__(self, rows: dict) -> dict:
        from .pipeline import process_batch

        out = []
        for batch, items in zip(rows["batch"], rows["items"], strict=True):
            result = process_batch(self.ctx, int(batch), from_json(json.loads(str(items))))
            out.append(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
        return {"batch": np.asarray(rows["batch"]), "result": np.array(out, dtype=object)}


def run_ray(config: dict, todo: list[tuple[int, list[Item]]], write) -> None:
    from .._lazy import import_optional

    import_optional("ray.data")  # the error names the extra: xaiready[ray]
    import ray
    import ray.data
    from ray.data import ActorPoolStrategy

    started = not ray.is_initialized()
    if started:
        # a local Ray when no address is given; its dashboard and log streaming are not needed here
        ray.init(address=config.get("ray_address"), include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # the run prints its own progress
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        rows = [{"batch": b, "items": json.dumps(as_json(items))} for b, items in todo]
        if not rows:
            return
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        gpus = _gpus_per_actor(ray, config.get("device"))
        ds = ds.map_batches(BatchWorker, fn_constructor_kwargs={"config": config}, batch_size=1,
                            compute=ActorPoolStrategy(size=int(config.get("workers") or 1)),
                            num_cpus=1, **({"num_gpus": gpus} if gpus else {}))
        for row in ds.iter_rows():
            write(pickle.loads(row["result"]))
    finally:
        if started:
            ray.shutdown()


def _gpus_per_actor(ray, device: str | None) -> int:
    if not device or not (device.startswith("cuda") or device == "auto"):
        return 0
    return 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
