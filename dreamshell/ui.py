"""What the user sees while images are made: a rich progress bar per image, and plain output."""

from __future__ import annotations

import sys
import time


class RichProgress:
    """One bar per image with step, it/s and ETA. rich is imported when the first bar is drawn."""

    def __init__(self, console=None):
        self._console = console
        self._progress = None
        self._task = None

    def start(self, label: str, total: int | None) -> None:
        """A bar for `total` steps; total None is a pulsing bar (loading)."""
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                                  TimeRemainingColumn(), console=self._console, transient=True)
        self._progress.start()
        self._task = self._progress.add_task(label, total=total, rate="")
        self._t0 = time.perf_counter()

    def step(self, done: int, total: int) -> None:
        if self._progress is None:
            return
        elapsed = max(1e-9, time.perf_counter() - self._t0)
        self._progress.update(self._task, completed=done, total=total, rate=f"{done / elapsed:.1f} it/s")

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class PlainProgress:
    """A single updating text line, for terminals where rich is unwanted (and for no terminal: nothing)."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr

    def start(self, label: str, total: int | None) -> None:
        self.label = label
        self._t0 = time.perf_counter()

    def step(self, done: int, total: int) -> None:
        if self.stream.isatty():
            rate = done / max(1e-9, time.perf_counter() - self._t0)
            self.stream.write(f"\r{self.label}: {done}/{total} {rate:.1f} it/s")
            self.stream.flush()

    def stop(self) -> None:
        if self.stream.isatty():
            self.stream.write("\r\033[K")
            self.stream.flush()
