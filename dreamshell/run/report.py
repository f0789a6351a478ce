"""Turning what a line did into text: image lines, notes, the stopped line, and a rich progress bar."""

from __future__ import annotations

import time
from typing import Callable

from ..line.request import ImageRecord
from ..line.safetext import one_line, visible
from .types import Listener, Stopped

NOTE_LIMIT = 4000   # -t's token lists are long on purpose; errors stay at safetext's shorter limit


def record_line(record: ImageRecord) -> str:
    """`path: command`, the line shown for every image made: the image's own log line (controls made
    visible). An image is known by its file's number; the shell puts the job's `#N` before it."""
    return visible(f"{record.path}: {record.command}")


def stopped_line(stopped: Stopped) -> str:
    rest = stopped.total - stopped.index
    after = f"; the {rest} after it were not made" if rest > 0 else ""
    return (f"stopped: image {stopped.index} of {stopped.total} was not finished and is not saved{after}; "
            f"{stopped.kept} finished image(s) kept")


def error_printer(console) -> Callable[[str], None]:
    """`error: ...` on a rich console: one line, controls made visible, never read as markup."""
    from rich.text import Text

    def error(text: str) -> None:
        line = Text("error: ", style="red" if console.is_terminal else "") + Text(one_line(text))
        console.print(line, highlight=False)
    return error


class TextListener(Listener):
    """Events as lines of text, with an optional progress display (start/step/stop)."""

    def __init__(self, echo: Callable[[str], None], progress=None, name: str = ""):
        self.echo = echo
        self.progress = progress
        self.name = name     # "#3": the job each line of text is said for

    def say(self, text: str) -> None:
        self.echo(f"{self.name} {text}" if self.name else text)

    def waiting_for_model(self, name: str) -> None:
        self.say(one_line(f"loading model {name}... (the line runs when it is ready)"))
        if self.progress is not None:
            self.progress.start(f"loading model {name}", None)

    def image_started(self, index: int, total: int, seed: int, steps: int) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress.start(f"image {index}/{total} seed {seed}", steps)

    def step(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress.step(done, total)

    def image_saved(self, record: ImageRecord, image) -> None:
        self.finish()
        self.say(record_line(record))

    def note(self, text: str) -> None:
        # a note may have lines of its own (-t lists every token); each is shown safely on its own
        self.say("\n".join(one_line(part, NOTE_LIMIT) for part in text.split("\n")))

    def finish(self) -> None:
        if self.progress is not None:
            self.progress.stop()


class RichProgress:
    """One bar per image with step, it/s and ETA. rich is imported when the first bar is drawn."""

    def __init__(self, console=None):
        self._console = console
        self._progress = None
        self._task = None

    def start(self, label: str, total: int | None) -> None:
        """A bar for `total` steps; total None is a pulsing bar (loading)."""
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        self.stop()
        self._progress = Progress(TextColumn("{task.description}", markup=False), BarColumn(),
                                  MofNCompleteColumn(), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                                  TextColumn("ETA"), TimeRemainingColumn(), console=self._console, transient=True)
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
