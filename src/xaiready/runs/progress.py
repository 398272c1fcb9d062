"""Progress of a run: a rich bar on a terminal, a plain line every few seconds otherwise, and the
callback of ``run_dataset`` (``callback(done_images, total_images)``) either way."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

LINE_EVERY = 5.0  # seconds between plain progress lines (logs, CI)


class RunProgress:
    def __init__(self, total: int, done: int = 0, *, show: bool = True, callback: Callable[[int, int], None] | None = None,
                 stream=None):
        self.total, self.done, self.callback = total, done, callback
        self.stream = stream or sys.stderr
        self._start_done, self._start, self._last = done, time.monotonic(), time.monotonic()
        self._bar = None
        if show and getattr(self.stream, "isatty", lambda: False)():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn("run"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rate]}"), TextColumn("ETA"), TimeRemainingColumn(),
                                 console=Console(file=self.stream), transient=False)
            self._task = self._bar.add_task("run", total=total, completed=done, rate="")
            self._bar.start()
        self.show = show

    def rate(self) -> float:
        elapsed = time.monotonic() - self._start
        return (self.done - self._start_done) / elapsed if elapsed > 0 else 0.0

    def advance(self, images: int) -> None:
        self.done += images
        if self.callback is not None:
            self.callback(self.done, self.total)
        if not self.show:
            return
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, rate=f"{self.rate():.1f} images/s")
            return
        now = time.monotonic()
        if now - self._last >= LINE_EVERY or self.done >= self.total:
            self._last = now
            print(self.line(), file=self.stream, flush=True)

    def line(self) -> str:
        rate = self.rate()
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        eta = f"{left:.0f} s" if left == left else "?"
        return f"run: {self.done}/{self.total} images, {rate:.1f} images/s, ETA {eta}"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
