"""The Ray actor: one resident model on one GPU (or N cores), making one image per call through the
one image step (run/image.py). No torch here: the engines are imported inside the worker process,
when the first image asks for them."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from ..line.errors import UserError
from ..line.request import DreamRequest
from ..line.safetext import first_line
from ..run.image import make_images
from ..run.types import ImageResult
from ..weights.library import LineFiles
from ..weights.models import ModelSpec, Registry


@dataclass(frozen=True)
class WorkerReply:
    """What a worker hands back: the image, or the one line that says why it could not be made."""

    pid: int
    result: ImageResult | None = None
    error: str | None = None


class ImageWorker:
    """Holds one generator; keeps its model loaded from image to image (the driver groups by model)."""

    def __init__(self, registry: Registry, device: str, precision: str, vae_precision: str = "auto"):
        self.registry = registry
        self.device = device
        self.precision, self.vae_precision = precision, vae_precision
        self.generator = None
        self.upscaler = None

    def ping(self) -> int:
        """The worker's process id (the driver's sign that a restarted worker is back)."""
        return os.getpid()

    def run(self, request: DreamRequest, spec: ModelSpec, files: LineFiles, init=None, mask=None,
            notes: bool = False) -> WorkerReply:
        """Make one image (`notes`: also the line's notes, for its first image)."""
        try:
            return WorkerReply(os.getpid(), self._run(request, spec, files, init, mask, notes))
        except (UserError, OSError) as e:
            return WorkerReply(os.getpid(), error=first_line(e, 400))

    def _run(self, request, spec, files, init, mask, notes) -> ImageResult:
        if self.generator is None:
            from ..engines.generator import DiffusersGenerator
            self.generator = DiffusersGenerator(device=self.device, precision=self.precision,
                                                folders=self.registry.folders, vae_precision=self.vae_precision)
            self.generator.esrgan = lambda image, factor: self._upscale(image, factor, 1.0)
        if self.generator.spec != spec:
            self.generator.load(spec)
        told = []
        if notes:
            if request.log_tokenization:
                told.append(self.generator.tokenization(request.prompt, files))
            told += self.generator.prompt_notes(request.prompt, files, (request.sampler, request.cfg_scale))
        result, = make_images(self.generator, [request], files, init, mask, upscale=self._upscale)
        return replace(result, notes=tuple(told) + result.notes) if told else result

    def _upscale(self, image, factor: float, strength: float, should_stop=None):
        if self.upscaler is None:
            from ..engines.upscaler import make_upscaler
            self.upscaler = make_upscaler(self.registry, self.device)
        return self.upscaler.upscale(image, factor, strength, should_stop=should_stop)
