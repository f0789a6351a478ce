"""One resident model and the requests run on it: validate -> generate -> upscale -> save -> log.

No torch here: the generator and upscaler are handed in (engines/), so the shell starts at once
and the model loads in a background thread while the user types.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from PIL import Image

from . import __version__
from .dreamlog import LOG_NAME, append_comment, append_log_line
from .engines.protocols import GenerationError, Interrupted
from .formatter import format_request
from .models import ModelSpec, Registry
from .naming import save_derived, save_numbered
from .pngmeta import ImageMeta, png_bytes
from .request import DreamRequest, ImageRecord
from .resolve import ResolveError, apply_defaults, image_requests, resolve_request
from .switches import MAX_SEED


class UserError(ValueError):
    """A request that cannot run as written; str() is the one line for the user."""


class StopFlag:
    """Set by Ctrl-C (from a signal handler or another thread); checked by the generator each step.
    Whoever starts a unit of work (a typed line, a batch) clears it first."""

    def __init__(self):
        self._event = threading.Event()

    def set(self):
        self._event.set()

    def clear(self):
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()


class NullProgress:
    """Progress display that shows nothing (tests, --from_file without a terminal)."""

    def start(self, label: str, total: int) -> None: ...
    def step(self, done: int, total: int) -> None: ...
    def stop(self) -> None: ...


@dataclass
class RunResult:
    records: list[ImageRecord] = field(default_factory=list)
    interrupted: bool = False
    grid: Path | None = None


class Session:
    def __init__(self, registry: Registry, generator_factory: Callable[[], object], outdir: Path,
                 upscaler_factory: Callable[[], object] | None = None, defaults: DreamRequest | None = None,
                 log: bool = True, echo: Callable[[str], None] = print, progress=None,
                 rng: random.Random | None = None):
        self.registry = registry
        self._generator_factory = generator_factory
        self._upscaler_factory = upscaler_factory
        self._upscaler = None
        self.generator = None
        self.outdir = Path(outdir)
        self.defaults = defaults
        self.log_enabled = log
        self.echo = echo
        self.progress = progress or NullProgress()
        self.rng = rng or random.SystemRandom()
        self.stop = StopFlag()
        self.seeds: list[int] = []       # seeds of the images made, oldest first (-S -1 is the last)
        self.images: list[Path] = []     # images made (-I -1 is the last)
        self.count = 0
        self.loading: ModelSpec | None = None
        self.on_wait: Callable[[str], None] | None = None   # told when a line waits for the model
        self._ready = threading.Event()
        self._load_error: BaseException | None = None
        self._load_thread: threading.Thread | None = None

    # ----- the resident model

    @property
    def spec(self) -> ModelSpec | None:
        return getattr(self.generator, "spec", None) if self._ready.is_set() else None

    def start_loading(self, spec: ModelSpec) -> None:
        """Load spec in a background thread; requests wait for it."""
        self._ready.clear()
        self._load_error = None
        self.loading = spec

        def work():
            try:
                if self.generator is None:
                    self.generator = self._generator_factory()
                if getattr(self.generator, "spec", None) != spec:
                    self.generator.load(spec)
            except BaseException as e:  # reported to the waiting request
                self._load_error = e
            finally:
                self.loading = None
                self._ready.set()

        self._load_thread = threading.Thread(target=work, name="model-loader", daemon=True)
        self._load_thread.start()

    def wait_until_ready(self, on_wait: Callable[[str], None] | None = None, poll: float = 0.1) -> None:
        """Block until the model is loaded (showing a loading bar); raise the load's error as a UserError."""
        if self._load_thread is None:
            raise UserError("no model is loaded: !models lists them, !switch NAME loads one")
        if not self._ready.is_set():
            name = self.loading.name if self.loading else "model"
            if on_wait is not None:
                on_wait(name)
            self.progress.start(f"loading model {name}", None)
            try:
                while not self._ready.wait(poll):
                    pass
            finally:
                self.progress.stop()
        if self._load_error is not None:
            error, self._load_error = self._load_error, None
            if isinstance(error, (GenerationError, OSError, ValueError)):
                raise UserError(str(error)) from None
            raise error

    @property
    def is_ready(self) -> bool:
        return self._ready.is_set() and self._load_error is None and self.spec is not None

    def switch(self, name: str) -> ModelSpec:
        """Make `name` the resident model (a name from the models file or a path); blocks until loaded."""
        try:
            spec = self.registry.get(name)
        except ValueError as e:
            raise UserError(str(e)) from None
        if self.spec is not None and self.spec == spec:
            return spec
        self.start_loading(spec)
        self.wait_until_ready()
        return spec

    # ----- one request

    def prepare(self, request: DreamRequest) -> DreamRequest:
        """Apply session defaults, switch model if the line names another, fill open values."""
        request = apply_defaults(request, self.defaults)
        self.wait_until_ready(self.on_wait)
        if request.model is not None:
            self.switch(request.model)
        if self.spec is None:
            raise UserError("no model is loaded: !models lists them, !switch NAME loads one")
        try:
            resolved = resolve_request(request, self.spec, self.seeds, self.rng)
        except ResolveError as e:
            raise UserError(str(e)) from None
        if resolved.init_img == "-1":
            if not self.images:
                raise UserError("-I -1 means the last image made, but none was made yet in this session")
            resolved = resolved.with_(init_img=str(self.images[-1]))
        return resolved.with_(model=self.spec.name)

    def _load_image(self, path: str, what: str, mode: str) -> Image.Image:
        try:
            with Image.open(Path(path).expanduser()) as img:
                return img.convert(mode)
        except FileNotFoundError:
            raise UserError(f"{what} {path}: no such file") from None
        except OSError as e:
            raise UserError(f"{what} {path}: not a readable image ({e})") from None

    def _inputs(self, request: DreamRequest, explicit_size: bool):
        """The init image and mask, sized to W x H (--fit resizes; otherwise sizes must agree)."""
        if not request.init_img:
            return None, None, request
        init = self._load_image(request.init_img, "-I", "RGB")
        if not explicit_size:
            w, h = init.size[0] // 8 * 8, init.size[1] // 8 * 8
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
                mask = mask.resize(init.size, Image.NEAREST)
        return init, mask, request

    def run(self, request: DreamRequest) -> RunResult:
        """Make every image of a line; each is saved and logged the moment it is done."""
        resolved = self.prepare(request)
        sized = apply_defaults(request, self.defaults)
        init, mask, resolved = self._inputs(resolved, explicit_size=bool(sized.width or sized.height))
        if resolved.upscale and self._upscaler_factory is None:
            raise UserError("-U: no upscaler is set up in this dreamshell")
        if resolved.log_tokenization:
            self.echo(self.generator.tokenization(resolved.prompt))
        for note in self.generator.prompt_notes(resolved.prompt):
            self.echo(note)
        outdir = Path(resolved.outdir).expanduser() if resolved.outdir else self.outdir
        result = RunResult()
        images = []
        per_image = image_requests(resolved)
        for index, one in enumerate(per_image):
            if one.variation_amount:
                variation_seed = self.rng.randint(0, MAX_SEED)
                one = one.with_(variation_amount=0.0,
                                with_variations=one.with_variations + ((variation_seed, one.variation_amount),))
            self.progress.start(f"image {index + 1}/{len(per_image)} seed {one.seed}", one.steps)
            try:
                if self.stop.is_set():  # Ctrl-C between two images
                    raise Interrupted()
                image = self.generator.generate(one, init_image=init, mask=mask, on_step=self.progress.step,
                                                should_stop=self.stop.is_set)
            except (Interrupted, KeyboardInterrupt):
                self.progress.stop()
                result.interrupted = True
                self.echo(f"stopped: image {index + 1} of {len(per_image)} was not finished and is not saved; "
                          f"{len(result.records)} finished image(s) kept")
                break
            except GenerationError as e:
                self.progress.stop()
                raise UserError(str(e)) from None
            self.progress.stop()
            if mask is not None:  # keep the unmasked part exactly as it was (as A1111's overlay does)
                image = Image.composite(image.convert("RGB"), init, mask.point(lambda v: 255 if v >= 128 else 0))
            record = self._save(one, image, outdir, mask is not None)
            result.records.append(record)
            images.append(image)
        if resolved.grid and len(images) > 1 and result.records:
            result.grid = self._save_grid(images, resolved, Path(result.records[0].path))
        return result

    def _save(self, request: DreamRequest, image: Image.Image, outdir: Path, inpaint: bool) -> ImageRecord:
        postprocessing: list[dict] = []
        original = image
        if request.upscale:
            image, request, postprocessing = self._upscale(image, request)
        image_type = "inpaint" if inpaint else "img2img" if request.init_img else "txt2img"
        command = format_request(request)
        meta = ImageMeta(request, self.generator.model_hash, __version__, tuple(postprocessing), image_type)
        path = save_numbered(outdir, request.seed, png_bytes(image, meta))
        if request.upscale and request.save_original:
            plain = request.with_(upscale=None, save_original=False)
            save_derived(path, "original", png_bytes(original, ImageMeta(plain, self.generator.model_hash,
                                                                         __version__, (), image_type)))
        if self.log_enabled:
            append_log_line(outdir / LOG_NAME, path, command)
        self.seeds.append(request.seed)
        self.images.append(path)
        self.count += 1
        self.echo(f"[{self.count}] {path}: {command}")
        return ImageRecord(str(path), request.seed, command, request)

    def upscaler(self):
        """The upscaler, made on first use (its weights load only when -U or !fix asks)."""
        if self._upscaler is None:
            if self._upscaler_factory is None:
                raise UserError("no upscaler is set up in this dreamshell")
            self._upscaler = self._upscaler_factory()
        return self._upscaler

    def _upscale(self, image, request: DreamRequest):
        """Upscale, or keep the image as it is and drop -U from its recipe when it cannot be done."""
        try:
            spec = request.upscale
            up = self.upscaler().upscale(image, spec.factor, spec.strength)
        except (GenerationError, OSError, ValueError) as e:
            self.echo(f"-U: {e}; the image is saved without upscaling")
            return image, request.with_(upscale=None, save_original=False), []
        done = [{"type": "esrgan", "scale": request.upscale.factor, "strength": request.upscale.strength}]
        return up, request, done

    def _save_grid(self, images: list[Image.Image], request: DreamRequest, first: Path) -> Path:
        cols = int(len(images) ** 0.5 + 0.999)
        rows = -(-len(images) // cols)
        w, h = images[0].size
        grid = Image.new("RGB", (cols * w, rows * h), "black")
        for i, img in enumerate(images):
            grid.paste(img, ((i % cols) * w, (i // cols) * h))
        meta = ImageMeta(request.with_(grid=False), self.generator.model_hash, __version__, (), "grid")
        path = save_derived(first, "grid", png_bytes(grid, meta))
        if self.log_enabled:
            append_comment(first.parent / LOG_NAME, f"grid {path} of {len(images)} images: {format_request(request)}")
        self.echo(f"grid: {path}")
        return path
