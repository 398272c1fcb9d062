"""The local engine: batches in this process, or in N worker processes (one model each) for CPUs.

In this process the batches flow through three stages at once: a thread reads and decodes the next
batch, the caller's thread explains and scores the current one, and a thread writes the one before
(files and its transaction). Queues of two batches between the stages keep memory bounded and let
disk work overlap the model's (which releases the GIL), so a run costs little more than its method.

Workers are started with ``spawn`` (a forked copy of a process that already ran a framework's
threads can hang) and each loads the model once. At most two batches per worker are in flight, so
memory stays bounded whatever the dataset's size; the driver writes every result to the store.
"""

from __future__ import annotations

import os
import queue
import threading
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

from .dataset import Item
from .pipeline import Context, compute_batch, process_batch, read_batch

_WORKER: dict = {}


def run_local(config: dict, todo: list[tuple[int, list[Item]]], write, *, handle=None) -> None:
    """Process every ``(batch, items)`` of ``todo`` and hand each BatchResult to ``write``."""
    workers = int(config.get("workers") or 1)
    if workers <= 1:
        ctx = Context(config, handle)
        _pipelined(todo, lambda b, items: read_batch(ctx, b, items), lambda loaded: compute_batch(ctx, loaded),
                   write)
        return
    import multiprocessing

    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init,
                               initargs=(config, workers))
    try:
        pending, queue = set(), iter(todo)
        for batch, items in queue:
            pending.add(pool.submit(_work, batch, items))
            if len(pending) >= 2 * workers:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    write(f.result())
        for f in pending:
            write(f.result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _init(config: dict, workers: int) -> None:
    if "OMP_NUM_THREADS" not in os.environ:  # share the cores instead of each worker taking them all
        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        try:
            import torch

            torch.set_num_threads(threads)
        except ImportError:
            pass
    _WORKER["ctx"] = Context(config)


def _work(batch: int, items: list[Item]):
    return process_batch(_WORKER["ctx"], batch, items)


_DONE = object()


def _pipelined(todo, read, compute, write) -> None:
    """read -> compute -> write, each stage in its own thread (compute in the caller's). The first
    error in any stage stops reading and computing and is raised here; batches already computed are
    still written (each is whole)."""
    loaded: queue.Queue = queue.Queue(maxsize=2)
    computed: queue.Queue = queue.Queue(maxsize=2)
    failed: list[BaseException] = []
    stop, finished = threading.Event(), threading.Event()  # stop: an error; finished: nothing more to write

    def put(q, value) -> bool:
        while not stop.is_set():
            try:
                q.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def reader():
        try:
            for batch, items in todo:
                if not put(loaded, read(batch, items)):
                    return
            put(loaded, _DONE)
        except BaseException as exc:  # handed to the caller's thread
            failed.append(exc)
            stop.set()

    def writer():
        try:
            while True:
                try:
                    result = computed.get(timeout=0.1)
                except queue.Empty:
                    if finished.is_set() or (stop.is_set() and failed):
                        return
                    continue
                write(result)
        except BaseException as exc:
            failed.append(exc)
            stop.set()

    threads = [threading.Thread(target=reader, daemon=True), threading.Thread(target=writer, daemon=True)]
    for t in threads:
        t.start()
    try:
        while not stop.is_set():
            try:
                item = loaded.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is _DONE or not put(computed, compute(item)):
                break
    finally:
        finished.set()
        stop_reader = threads[0]
        threads[1].join()
        stop.set()
        stop_reader.join()
    if failed:
        raise failed[0]
