"""What every format module shares: the error, the metadata written, the recipe read, its notes,
and a builder that turns foreign values into a valid DreamRequest without dropping anything silently."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import cached_property

from ...line import hires
from ...line.errors import UserError
from ...line.formatter import format_request
from ...line.limits import MAX_SIZE, MIN_SIZE, LimitError, check_request
from ...line.prompt import PromptError, split_prompt
from ...line.request import DreamRequest
from ...line.switches import BY_SPELLING, SwitchError, format_number
from ...weights.files import BadJSON
from ...weights.files import load_json as _load_json
from ...weights.library import RecipeExtras

APP_ID = "dreamshell"
MAX_CHUNK = 1 << 20          # one text chunk (decompressed) a recipe may come from
MAX_TEXT_TOTAL = 4 << 20     # all text chunks of one file together
MAX_COMMAND = 16384          # characters of a recovered command line


class MetadataError(UserError):
    """An image whose recipe cannot be read; str() is the one line for the user."""


def load_json(text: str, what: str):
    """A chunk's JSON, any failure (not JSON, nested too deep) one MetadataError naming the chunk."""
    try:
        return _load_json(text)
    except BadJSON as e:
        raise MetadataError(f"{what} is {e}") from None


@dataclass(frozen=True)
class ImageMeta:
    """What goes into the chunks of one image."""

    request: DreamRequest            # resolved: steps, seed, size, cfg, sampler, model all set
    model_hash: str = ""             # sha256 hex of the weights
    app_version: str = ""
    postprocessing: tuple[dict, ...] = field(default_factory=tuple)
    image_type: str = "txt2img"
    extras: RecipeExtras = field(default_factory=RecipeExtras)   # LoRAs, embeddings, VAE with A1111's hashes

    @cached_property
    def command(self) -> str:
        """The canonical command that remakes the image, formatted once: the log line's, the record's and
        A1111's `Dreamshell` key."""
        return format_request(self.request)


@dataclass(frozen=True)
class Recipe:
    """A recovered command, what could not be carried over, and where it came from."""

    request: DreamRequest
    notes: tuple[str, ...] = ()
    source: str = ""
    recorded: RecipeExtras = field(default_factory=RecipeExtras)   # the LoRA/embedding/VAE hashes the file names


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_RUN = re.compile(r"\s*[\x00-\x1f\x7f-\x9f\u2028\u2029][\s\x00-\x1f\x7f-\x9f\u2028\u2029]*")


def one_line(text: str) -> str:
    """Newlines, tabs and other control characters become spaces: a command is one plain line."""
    return _CONTROL_RUN.sub(" ", text).strip()


def short(value, limit: int = 60) -> str:
    text = one_line(str(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Builder:
    """Collects a request's fields from a foreign format, plus notes and the names of what was dropped."""

    def __init__(self, source: str):
        self.source = source
        self.values: dict = {}
        self.notes: list[str] = []
        self.dropped: list[str] = []

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def drop(self, what: str) -> None:
        if what not in self.dropped:
            self.dropped.append(what)

    def set(self, spelling: str, token, label: str | None = None) -> bool:
        """Set a field from its text as the switch `spelling` reads it; a bad value is dropped by name."""
        sw = BY_SPELLING[spelling]
        try:
            value = sw.convert([str(t) for t in token] if sw.nargs[1] > 1 else str(token))
        except SwitchError as e:
            self.drop(f"{label or spelling} {short(token)} ({e})")
            return False
        self.values[sw.field] = value
        return True

    def size(self, width, height, label: str = "size") -> None:
        """Width and height, rounded to a multiple of 8 with a note when they are not one."""
        try:
            w, h = int(float(width)), int(float(height))
        except (TypeError, ValueError, OverflowError):
            self.drop(f"{label} {short(width)}x{short(height)} (not numbers)")
            return
        rw, rh = (max(MIN_SIZE, min(MAX_SIZE, 8 * round(v / 8))) for v in (w, h))
        if (rw, rh) != (w, h):
            self.note(f"size {w}x{h} rounded to {rw}x{rh} (dreamshell sizes are multiples of 8 from {MIN_SIZE} to {MAX_SIZE})")
        self.values["width"], self.values["height"] = rw, rh

    def seed(self, value) -> None:
        """A seed; -1 (or empty) is "random" in A1111, InvokeAI and ComfyUI: a new random seed here."""
        text = str(value).strip()
        if text in ("-1", "", "None"):
            self.note("seed -1 (random) read as a new random seed; no -S on the line")
            return
        self.set("-S", text, "seed")
        if self.values.get("seed", 0) < 0:
            self.values.pop("seed")
            self.drop(f"seed {text} (negative)")

    def convert(self, spelling: str, token):
        """The value the switch `spelling` reads from token; SwitchError when it cannot."""
        return BY_SPELLING[spelling].convert(str(token))

    def hires_scale(self, first: tuple[int, int], final: tuple[int, int], label: str, how: str) -> float:
        """The --hires_scale that takes the first pass (W x H) to the final size; when no one scale gives it
        exactly (a different aspect ratio), the one that covers it, with a note naming the size made instead.
        `how` says what the other tool did with such a size."""
        (w, h), (fw, fh) = first, final
        want = (fw // 8 * 8, fh // 8 * 8)
        for ratio in (fw / w, fh / h):     # the shortest scale that makes the size (latents are 1/8 of it)
            for scale in (round(ratio, 2), round(ratio, 3), round(ratio, 4), round(ratio, 6), ratio):
                if hires.target_size(w, h, scale) == want:
                    return scale
        scale = math.ceil(max(fw / w, fh / h) * 10_000) / 10_000
        made = hires.target_size(w, h, scale)
        self.note(f"{label} is not {w}x{h} times one scale ({how}): read as --hires_scale {format_number(scale)}, "
                  f"which makes {made[0]}x{made[1]}")
        return scale

    def build(self, prompt: str, recorded: RecipeExtras | None = None) -> "Recipe":
        if _CONTROL.search(prompt.strip()):
            self.note("line breaks and control characters in the prompt became spaces (a command is one line)")
        prompt = one_line(prompt)
        if not prompt:
            raise MetadataError(f"{self.source} has no prompt")
        try:
            split_prompt(prompt)
        except PromptError as e:
            raise MetadataError(f"{self.source}: the prompt cannot be read ({e})") from None
        if self.values.get("init_mask") and not self.values.get("init_img"):
            self.values.pop("init_mask")
            self.drop("the inpainting mask (no init image)")
        self._hires_within_limits()
        request = DreamRequest(prompt=prompt, **self.values)
        return Recipe(request, self.finish(), self.source, recorded or RecipeExtras())

    def _hires_within_limits(self) -> None:
        """A hires fix dreamshell's limits refuse (its size, its steps) is dropped by name, the rest kept."""
        fields = ("hires_fix", "hires_scale", "hires_steps", "hires_strength", "hires_upscaler")
        if not self.values.get("hires_fix"):
            return
        keep = ("width", "height", "sampler", *fields)
        try:
            check_request(DreamRequest(prompt="x", **{k: v for k, v in self.values.items() if k in keep}))
        except LimitError as e:
            taken = {k: self.values.pop(k) for k in fields if k in self.values}
            described = ", ".join(f"{k} {format_number(v) if isinstance(v, float) else v}" for k, v in taken.items()
                                  if k != "hires_fix")
            self.drop(f"hires fix ({described}; {e})")

    def finish(self) -> tuple[str, ...]:
        notes = list(self.notes)
        if self.dropped:
            notes.append("not carried over: " + "; ".join(self.dropped))
        return tuple(notes)
