"""One request at a time: validate -> resolve -> generate -> upscale -> save. Returns data, prints nothing.

No torch here: the model is reached through the model host (model_host.py), files through the
output folder (output.py). What happens while a line runs is told to a Listener as events (an image
saved, a note, a step); only the shell and the batch runner turn events and results into text.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from PIL import Image

from .. import __version__
from ..engines.protocols import GenerationError, Interrupted
from ..line.errors import LimitError
from ..weights.library import ExtraError, Library, RecipeExtras
from ..line.limits import check_request
from ..line.formatter import format_request
from .model_host import LoadError, ModelHost
from ..weights.models import ModelSpec, ModelsFileError, Registry
from ..store.output import OutputFolder, compose_grid
from ..store.pngmeta import ImageMeta
from ..line.prompt import PromptError
from ..line.request import DreamRequest, ImageRecord
from .resolve import ResolveError, apply_defaults, image_requests, resolve_request
from ..line.switches import MAX_SIZE, MIN_SIZE


class UserError(ValueError):
    """A request that cannot run as written; str() is the one line for the user."""


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

    def waiting_for_model(self, name: str) -> None: ...
    def image_started(self, index: int, total: int, seed: int, steps: int) -> None: ...
    def step(self, done: int, total: int) -> None: ...
    def preview(self, done: int, total: int, image) -> None: ...
    def image_saved(self, record: ImageRecord, image) -> None: ...
    def note(self, text: str) -> None: ...


@dataclass(frozen=True)
class Stopped:
    """A line stopped by the user: image `index` of `total` was not finished; `kept` were saved."""

    index: int
    total: int
    kept: int


@dataclass
class RunResult:
    records: list[ImageRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stopped: Stopped | None = None
    grid: Path | None = None

    @property
    def interrupted(self) -> bool:
        return self.stopped is not None


class Session:
    def __init__(self, registry: Registry, host: ModelHost, outdir: Path,
                 defaults: DreamRequest | None = None, log: bool = True, rng: random.Random | None = None):
        self.registry = registry
        self.host = host
        self.outdir = Path(outdir)
        self.defaults = defaults
        self.log_enabled = log
        self.rng = rng or random.SystemRandom()
        self.model: ModelSpec = registry.default   # the model lines run on (the queue's view)
        self.seeds: list[int] = []       # seeds of the images made, oldest first (-S -1 is the last)
        self.images: list[Path] = []     # images made (-I -1 is the last)
        self.count = 0
        self._folders: dict[Path, OutputFolder] = {}
        self.library = Library(registry.folders)   # LoRA, embedding and VAE files

    @property
    def spec(self) -> ModelSpec | None:
        """The resident model (None until its first load has finished)."""
        return self.host.spec

    def folder(self, path: Path | str | None = None) -> OutputFolder:
        """The output folder for -o path (default: the session's); opened, and repaired, on first use."""
        key = Path(path).expanduser() if path else self.outdir
        if key not in self._folders:
            self._folders[key] = OutputFolder(key, log=self.log_enabled)
        return self._folders[key]

    # ----- checks at submit time (nothing loaded, nothing resolved)

    def check(self, request: DreamRequest, files: bool = True) -> DreamRequest:
        """Refuse at once what can be known wrong before the line runs (a model name; a missing file
        when `files`: a queued line's files are looked for when it runs, since lines before it may
        make them)."""
        request = apply_defaults(request, self.defaults)
        spec = self.lookup(request.model) if request.model is not None else self.model
        self.check_extras(request.prompt, request.vae or spec.vae)
        for path, what in ((request.init_img, "-I"), (request.init_mask, "-M")) if files else ():
            if path and path != "-1" and not Path(path).expanduser().is_file():
                raise UserError(f"{what} {path}: no such file")
        return request

    def check_extras(self, prompt: str, vae: str | None) -> None:
        """A LoRA the prompt tags or a VAE the line names that is not there: one line naming the folder."""
        try:
            self.library.check(prompt, vae)
        except (ExtraError, PromptError) as e:
            raise UserError(str(e)) from None

    def recipe_extras(self, request: DreamRequest) -> RecipeExtras:
        """The LoRAs, embeddings and VAE a resolved line uses, with A1111's hashes."""
        try:
            return self.library.recipe_extras(request.prompt, request.vae)
        except (ExtraError, PromptError, OSError) as e:
            raise UserError(str(e)) from None

    def lookup(self, name: str) -> ModelSpec:
        try:
            return self.registry.get(name)
        except ModelsFileError as e:
            raise UserError(str(e)) from None

    # ----- the model

    def switch(self, name: str, listener: Listener | None = None) -> ModelSpec:
        """Make `name` the model lines run on; blocks until it is loaded (a failed load keeps the old)."""
        spec = self.lookup(name)
        self._ensure(spec, listener or Listener())
        self.model = spec
        return spec

    def _ensure(self, spec: ModelSpec, listener: Listener) -> None:
        try:
            self.host.ensure(spec, on_wait=listener.waiting_for_model)
        except LoadError as e:
            raise UserError(str(e)) from None

    # ----- one request

    def prepare(self, request: DreamRequest, listener: Listener | None = None) -> DreamRequest:
        """Defaults, the model (switched if the line names another), seeds and -I -1 resolved."""
        request = apply_defaults(request, self.defaults)
        spec = self.lookup(request.model) if request.model is not None else self.model
        self._ensure(spec, listener or Listener())
        self.model = spec
        try:
            resolved = resolve_request(request, spec, self.seeds, self.rng)
            check_request(resolved)          # the sampler and steps are known now
        except (ResolveError, LimitError) as e:
            raise UserError(str(e)) from None
        if resolved.init_img == "-1":
            if not self.images:
                raise UserError("-I -1 means the last image made, but none was made yet in this session")
            resolved = resolved.with_(init_img=str(self.images[-1]))
        return resolved.with_(model=spec.name)

    def run(self, request: DreamRequest, listener: Listener | None = None,
            control: Control | None = None) -> RunResult:
        """Make every image of a line; each is saved and logged the moment it is done."""
        listener = listener or Listener()
        control = control or Control()
        result = RunResult()
        resolved = self.prepare(request, listener)
        sized = apply_defaults(request, self.defaults)
        init, mask, resolved = self._inputs(resolved, explicit_size=bool(sized.width or sized.height),
                                            note=lambda text: self._note(result, listener, text))
        extras = self.recipe_extras(resolved)
        folder = self.folder(resolved.outdir)
        for note in folder.open():
            self._note(result, listener, note)
        generator = self.host.generator
        try:
            if resolved.log_tokenization:
                self._note(result, listener, self.host.call(lambda: generator.tokenization(resolved.prompt)))
            for note in self.host.call(lambda: generator.prompt_notes(resolved.prompt)):
                self._note(result, listener, note)
        except GenerationError as e:   # an embedding that does not fit the model
            raise UserError(str(e)) from None
        images = []
        per_image = image_requests(resolved, self.rng)
        index = 0
        for group in self._groups(per_image, generator, init):
            control.before_image()
            listener.image_started(index + 1, len(per_image), group[0].seed, group[0].steps)
            try:
                if control.stop.is_set():  # Ctrl-C between two images
                    raise Interrupted()
                made = self.host.call(lambda: self._generate(generator, group, init, mask, listener, control))
            except (Interrupted, KeyboardInterrupt):
                result.stopped = Stopped(index + 1, len(per_image), len(result.records))
                break
            except GenerationError as e:
                raise UserError(str(e)) from None
            for one, image in zip(group, made):
                if mask is not None:  # keep the unmasked part exactly as it was (as A1111's overlay does)
                    image = Image.composite(image.convert("RGB"), init, mask.point(lambda v: 255 if v >= 128 else 0))
                record, saved = self._save(one, image, folder, "inpaint" if mask is not None else None, result,
                                           listener, extras)
                result.records.append(record)
                images.append(image)
                listener.image_saved(record, saved)
                index += 1
        if resolved.grid and len(images) > 1 and result.records:
            result.grid = self._save_grid(images, resolved, folder, Path(result.records[0].path), extras)
        return result

    @staticmethod
    def _groups(per_image: list[DreamRequest], generator, init) -> list[list[DreamRequest]]:
        """Images made together: `--batch_size N` groups txt2img images (each keeps its own seed's
        noise); otherwise one at a time."""
        size = getattr(generator, "batch_size", 1) if init is None else 1
        return [per_image[i:i + size] for i in range(0, len(per_image), max(1, size))]

    @staticmethod
    def _generate(generator, group: list[DreamRequest], init, mask, listener: Listener, control: Control) -> list:
        if len(group) > 1:
            return generator.generate_batch(group, on_step=listener.step, should_stop=control.stop.is_set)
        previews = {"on_preview": listener.preview} if listener.wants_preview else {}
        return [generator.generate(group[0], init_image=init, mask=mask, on_step=listener.step,
                                   should_stop=control.stop.is_set, **previews)]

    def _note(self, result: RunResult, listener: Listener, text: str) -> None:
        result.notes.append(text)
        listener.note(text)

    def _load_image(self, path: str, what: str, mode: str) -> Image.Image:
        try:
            with Image.open(Path(path).expanduser()) as img:
                return img.convert(mode)
        except FileNotFoundError:
            raise UserError(f"{what} {path}: no such file") from None
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise UserError(f"{what} {path}: not a readable image ({e})") from None

    def _inputs(self, request: DreamRequest, explicit_size: bool, note: Callable[[str], None] = lambda _: None):
        """The init image and mask, sized to W x H (--fit resizes; otherwise sizes must agree)."""
        if not request.init_img:
            return None, None, request
        init = self._load_image(request.init_img, "-I", "RGB")
        if not explicit_size:
            w, h = init.size[0] // 8 * 8, init.size[1] // 8 * 8
            if not (MIN_SIZE <= w <= MAX_SIZE and MIN_SIZE <= h <= MAX_SIZE):
                raise UserError(f"-I {init.size[0]}x{init.size[1]} image: without -W/-H the image's own size is "
                                f"used, and sizes go from {MIN_SIZE} to {MAX_SIZE}; add -W/-H and --fit")
            request = request.with_(width=w, height=h)
        if init.size != (request.width, request.height):
            if not request.fit and explicit_size:
                raise UserError(f"-I {request.init_img} is {init.size[0]}x{init.size[1]} but the line asks for "
                                f"{request.width}x{request.height}: add --fit to resize it, or drop -W/-H")
            init = init.resize((request.width, request.height), Image.LANCZOS)
        mask = None
        if request.init_mask:
            mask = self._load_image(request.init_mask, "-M", "L")
            if mask.size != init.size:
                note(f"note: -M {request.init_mask} is {mask.size[0]}x{mask.size[1]}; it is resized to the image's "
                     f"{init.size[0]}x{init.size[1]}")
                mask = mask.resize(init.size, Image.NEAREST)
        return init, mask, request

    def _meta(self, request: DreamRequest, image_type: str, postprocessing=(), extras: RecipeExtras | None = None) \
            -> ImageMeta:
        model_hash = getattr(self.host.generator, "model_hash", "") or ""
        return ImageMeta(request, model_hash, __version__, tuple(postprocessing), image_type,
                         extras or RecipeExtras())

    def _save(self, request: DreamRequest, image, folder: OutputFolder, image_type: str | None,
              result: RunResult, listener: Listener, extras: RecipeExtras | None = None):
        original = image
        postprocessing: list[dict] = []
        if request.upscale:
            image, request, postprocessing = self._upscale(image, request, result, listener)
        image_type = image_type or ("img2img" if request.init_img else "txt2img")
        path = folder.save_image(image, self._meta(request, image_type, postprocessing, extras))
        if request.upscale and request.save_original:
            plain = request.with_(upscale=None, save_original=False)
            folder.save_original(path, original, self._meta(plain, image_type, (), extras))
        self.seeds.append(request.seed)
        self.images.append(path)
        self.count += 1
        return ImageRecord(str(path), request.seed, format_request(request), self.count), image

    def _upscale(self, image, request: DreamRequest, result: RunResult, listener: Listener):
        """Upscale, or keep the image as it is and drop -U from its recipe when it cannot be done."""
        spec = request.upscale
        try:
            up = self.host.call(lambda: self.host.upscaler().upscale(image, spec.factor, spec.strength))
        except (GenerationError, LoadError, OSError, ValueError) as e:
            self._note(result, listener, f"-U: {e}; the image is saved without upscaling")
            return image, request.with_(upscale=None, save_original=False), []
        return up, request, [{"type": "esrgan", "scale": spec.factor, "strength": spec.strength}]

    def _save_grid(self, images: list, request: DreamRequest, folder: OutputFolder, first: Path,
                   extras: RecipeExtras | None = None) -> Path:
        return folder.save_grid(first, compose_grid(images), self._meta(request.with_(grid=False), "grid", (), extras),
                                len(images))

    # ----- post-processing (!fix)

    def upscale_file(self, path: Path, spec, recipe: DreamRequest | None) -> ImageRecord:
        """Upscale an existing image into STEM.upscale[-NN].png beside it, never overwriting."""
        image = self._load_image(str(path), "!fix", "RGB")
        try:
            up = self.host.call(lambda: self.host.upscaler().upscale(image, spec.factor, spec.strength))
        except (GenerationError, LoadError) as e:
            raise UserError(f"!fix: {e}") from None
        folder = OutputFolder(path.parent, log=self.log_enabled)
        if recipe is None:
            out = folder.save_fix(path, up, None)
            return ImageRecord(str(out), -1, "", 0)
        request = recipe.with_(upscale=spec)
        post = ({"type": "esrgan", "scale": spec.factor, "strength": spec.strength, "source": str(path)},)
        try:   # the source image's LoRAs, embeddings and VAE, where their files are here
            extras = self.library.recipe_extras(recipe.prompt, recipe.vae)
        except (ExtraError, PromptError, OSError):
            extras = None
        out = folder.save_fix(path, up, self._meta(request, "txt2img", post, extras))
        return ImageRecord(str(out), request.seed, format_request(request), 0)
