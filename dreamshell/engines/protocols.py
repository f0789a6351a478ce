"""What the run needs from engines, and the errors they raise (no torch here).

`run/` reaches the model only through these protocols; `engines/generator.DiffusersGenerator` and
`engines/upscaler` implement them, and tests use fakes (tests/fake_generator.py)."""

from __future__ import annotations

from typing import Callable, Protocol

from ..line.errors import UserError
from ..line.request import DreamRequest
from ..weights.library import LineFiles
from ..weights.models import ModelSpec


class GenerationError(RuntimeError, UserError):
    """A generation that failed for a reason the user can act on; str() is one line."""


class Interrupted(Exception):
    """The user stopped the generation (Ctrl-C); nothing partial is kept."""


StepCallback = Callable[[int, int], None]        # (step done, total steps)
StopCheck = Callable[[], bool]
PreviewCallback = Callable[[int, int, object], None]   # (step done, total, small PIL image)


class Generator(Protocol):
    """One resident model that makes images for resolved per-image requests."""

    spec: ModelSpec | None        # the resident model (None: none loaded)
    model_hash: str               # sha256 of its weights, for the recipe
    device: str                   # cuda | mps | cpu
    precision: str                # float32 | float16 | bfloat16
    batch_size: int               # images of one line it may make in one call (--batch_size)
    esrgan: Callable | None       # (image, factor) -> image for --hires_upscaler esrgan; set by the host
    text_layers: int | None       # layers of the resident model's text encoder (clip skip's bound), None: unknown

    def load(self, spec: ModelSpec) -> None: ...

    def generate(self, request: DreamRequest, *, files: LineFiles | None = None, init_image=None, mask=None,
                 on_step: StepCallback | None = None, should_stop: StopCheck | None = None,
                 on_preview: PreviewCallback | None = None, controls: dict | None = None): ...
    # controls: a --control line's maps by size {(w, h): (PIL image, ...)}, passed only when the line has some

    def generate_batch(self, requests: list[DreamRequest], *, files: LineFiles | None = None,
                       on_step: StepCallback | None = None, should_stop: StopCheck | None = None) -> list: ...

    def tokenization(self, prompt: str, files: LineFiles | None = None) -> str: ...

    def prompt_notes(self, prompt: str, files: LineFiles | None = None,
                     running: tuple[str, float] | None = None) -> list[str]: ...
