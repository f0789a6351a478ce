"""The run's types: how a running line is steered (Control), what it tells as it goes (Listener), and
what it returns (RunResult, ImageResult). No torch, no terminal."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..line.request import DreamRequest, ImageRecord


class StopFlag:
    """Set by Ctrl-C (a signal handler or a key binding); checked by the generator each step."""

    def __init__(self):
        self._event = threading.Event()

    def set(self):
        self._event.set()

    def clear(self):
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()


class Control:
    """How a running line is steered from outside: stop (Ctrl-C) and pause between images (!pause)."""

    def __init__(self, stop: StopFlag | None = None, gate: Callable[[], None] | None = None):
        self.stop = stop or StopFlag()
        self._gate = gate

    def before_image(self) -> None:
        """Wait here while the queue is paused (returns at once when stopped)."""
        if self._gate is not None:
            self._gate()


class Listener:
    """What a running line tells as it goes; every method may be left as it is (nothing shown)."""

    wants_preview = False   # True: preview() gets a small picture of the image as it denoises
    name = ""               # who is speaking: the shell's job ("#3"); what the line says is prefixed with it

    def waiting_for_model(self, name: str) -> None: ...
    def image_started(self, index: int, total: int, seed: int, steps: int) -> None: ...
    def step(self, done: int, total: int) -> None: ...
    def preview(self, done: int, total: int, image) -> None: ...
    def image_saved(self, record: ImageRecord, image) -> None: ...
    def note(self, text: str) -> None: ...
    def finish(self) -> None: ...    # the line is over (a progress display ends)


@dataclass(frozen=True)
class Stopped:
    """A line stopped by the user: image `index` of `total` was not finished; `kept` were saved."""

    index: int
    total: int
    kept: int


@dataclass
class RunResult:
    """What one line made: its saved images, the notes it gave, where it was stopped, its grid."""

    records: list[ImageRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stopped: Stopped | None = None
    grid: Path | None = None

    @property
    def interrupted(self) -> bool:
        return self.stopped is not None


@dataclass(frozen=True)
class ImageResult:
    """One image made by the image step (run/image.py), ready to be saved: the same on every path
    (the shell, a command file, a Ray worker)."""

    image: object                      # the PIL image to save (upscaled when -U worked)
    request: DreamRequest              # its recipe: -U is dropped when the upscale could not be done
    image_type: str                    # txt2img | img2img | inpaint
    model_hash: str = ""
    original: object = None            # the image before -U, when --save_original keeps it
    postprocessing: tuple[dict, ...] = ()
    notes: tuple[str, ...] = ()        # said while making it (an upscale that fell back)
