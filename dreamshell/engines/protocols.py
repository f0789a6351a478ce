"""What the session needs from engines, and the errors they raise (no torch here)."""

from __future__ import annotations

from typing import Callable, Protocol

from ..weights.models import ModelSpec
from ..line.request import DreamRequest


class GenerationError(RuntimeError):
    """A generation that failed for a reason the user can act on; str() is one line."""


class Interrupted(Exception):
    """The user stopped the generation (Ctrl-C); nothing partial is kept."""


StepCallback = Callable[[int, int], None]   # (step done, total steps)
StopCheck = Callable[[], bool]


class Generator(Protocol):
    spec: ModelSpec | None
    model_hash: str
    device: str
    precision: str

    def load(self, spec: ModelSpec) -> None: ...

    def generate(self, request: DreamRequest, *, init_image=None, mask=None,
                 on_step: StepCallback | None = None, should_stop: StopCheck | None = None): ...

    def tokenization(self, prompt: str) -> str: ...

    def prompt_notes(self, prompt: str) -> list[str]: ...


class Upscaler(Protocol):
    def upscale(self, image, factor: float, strength: float): ...
