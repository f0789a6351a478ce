"""A command file as a list of per-image tasks, planned on the driver before any work starts (no torch).

The rules are the local run's (session.py): session defaults, the model (sticky from line to line,
`!switch NAME` changes it), `-S -N` from the seeds of the images planned before, `-n`/`-v` split by
`resolve.image_requests`. `-I -1` names the last image made before its line; that image's path is
known only once it is written, so such a line waits until every image before it is written.
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..weights.library import ExtraError, Library
from ..line.limits import check_request
from ..line.prompt import PromptError
from ..store.dreamlog import LOG_NAME
from ..line.formatter import format_request
from ..weights.models import ModelsFileError, ModelSpec, Registry
from ..line.parser import ParseError, parse_line
from ..line.request import BangCommand, Blank, DreamRequest, HelpRequest
from ..run.resolve import ResolveError, apply_defaults, image_requests, resolve_request


class LineError(ValueError):
    """A line that cannot run as written; str() is the one line for the user."""


@dataclass(frozen=True)
class ImageTask:
    """One image of the file, in the file's order (index), with the line that asks for it."""

    index: int
    number: int               # the line's number in the file
    line_start: int           # index of the line's first image
    line_count: int           # images of the line
    request: DreamRequest     # resolved, one image (init_img may still be "-1")
    spec: ModelSpec
    explicit_size: bool       # the line (or the defaults) gave -W/-H: an init image must match or --fit
    grid: bool                # the line asks for a grid of its images (-g with -n > 1)
    line_request: DreamRequest  # the line resolved (-n N, first seed): the grid's recipe


@dataclass
class Plan:
    tasks: list[ImageTask]
    errors: list[str]          # `FILE:N: message`, one per bad line


def plan_seed(lines: list[tuple[int, str]]) -> random.Random:
    """The random source for seeds a file leaves open: drawn from the file's text, so a rerun
    (`--resume`) plans the very same images."""
    digest = hashlib.sha256("\n".join(text for _, text in lines).encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def plan_lines(lines: list[tuple[int, str]], registry: Registry, model: ModelSpec,
               defaults: DreamRequest | None, label: str, rng: random.Random | None = None) -> Plan:
    """Every image of every line as a task; every bad line as one error (nothing is run)."""
    rng = rng or plan_seed(lines)
    tasks: list[ImageTask] = []
    errors: list[str] = []
    seeds: list[int] = []
    for number, text in lines:
        try:
            model = _plan_line(number, text, registry, model, defaults, rng, seeds, tasks)
        except (ParseError, ResolveError, ModelsFileError, LineError, ExtraError, PromptError) as e:
            errors.append(f"{label}:{number}: {e}")
    return Plan(tasks, errors)


def _plan_line(number, text, registry, model, defaults, rng, seeds, tasks) -> ModelSpec:
    item = parse_line(text)
    if isinstance(item, Blank):
        return model
    if isinstance(item, HelpRequest):
        raise LineError("a help line makes no image; remove it from the file")
    if isinstance(item, BangCommand):
        if item.name == "switch" and item.args:
            return registry.get(item.args.strip().strip("\"'"))
        raise LineError(f"!{item.name} is not run with --ray (only prompt lines and !switch NAME are)")
    request = apply_defaults(item, defaults)
    spec = registry.get(request.model) if request.model is not None else model
    for path, what in ((request.init_img, "-I"), (request.init_mask, "-M")):
        if path and path != "-1" and not Path(path).expanduser().is_file():
            raise LineError(f"{what} {path}: no such file")
    if request.init_img == "-1" and not tasks:
        raise LineError("-I -1 means the last image made, but no line before this one makes an image")
    resolved = resolve_request(request, spec, seeds, rng).with_(model=spec.name)
    check_request(resolved)
    Library(registry.folders).check(resolved.prompt, resolved.vae)   # the LoRAs and VAE it names are there
    per_image = image_requests(resolved, rng)
    start = len(tasks)
    explicit = bool(request.width or request.height)
    for one in per_image:
        tasks.append(ImageTask(len(tasks), number, start, len(per_image), one, spec, explicit,
                               resolved.grid and len(per_image) > 1, resolved))
    seeds.extend(one.seed for one in per_image)
    return spec


# ----- inputs, made ready on the driver when a task is about to run

def _load_image(path: str, what: str, mode: str) -> Image.Image:
    try:
        with Image.open(Path(path).expanduser()) as img:
            return img.convert(mode)
    except FileNotFoundError:
        raise LineError(f"{what} {path}: no such file") from None
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise LineError(f"{what} {path}: not a readable image ({e})") from None


def load_inputs(request: DreamRequest, explicit_size: bool):
    """The init image and mask sized as the local run sizes them; the request with its final size."""
    if not request.init_img:
        return None, None, request
    init = _load_image(request.init_img, "-I", "RGB")
    if not explicit_size:
        request = request.with_(width=init.size[0] // 8 * 8, height=init.size[1] // 8 * 8)
    if init.size != (request.width, request.height):
        if not request.fit and explicit_size:
            raise LineError(f"-I {request.init_img} is {init.size[0]}x{init.size[1]} but the line asks for "
                            f"{request.width}x{request.height}: add --fit to resize it, or drop -W/-H")
        init = init.resize((request.width, request.height), Image.LANCZOS)
    mask = None
    if request.init_mask:
        mask = _load_image(request.init_mask, "-M", "L")
        if mask.size != init.size:
            mask = mask.resize(init.size, Image.NEAREST)
    return init, mask, request


# ----- --resume: what the output folder's log already holds

class LogIndex:
    """The canonical commands of a folder's log and the images they name (a multiset: a command
    planned twice is skipped only as often as it is logged)."""

    def __init__(self, folder: Path):
        self._paths: dict[str, list[str]] = defaultdict(list)
        try:
            text = (Path(folder) / LOG_NAME).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return
        for line in text.splitlines():
            head, sep, command = line.partition(": ")
            if sep and not line.startswith("#"):
                self._paths[command.strip()].append(head.strip())

    def take(self, request: DreamRequest) -> str | None:
        """The logged image made by this request, used up; None when the log has none left."""
        paths = self._paths.get(format_request(request))
        return paths.pop(0) if paths else None
