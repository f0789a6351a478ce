"""The Ray actor: one resident model on one GPU (or N cores), making one image per call (no torch here:
the engines are imported inside the worker process, when the first image asks for them)."""

from __future__ import annotations

import os

from ..weights.models import ModelSpec, Registry
from ..line.request import DreamRequest


class ImageWorker:
    """Holds one generator; keeps its model loaded from image to image (the driver groups by model)."""

    def __init__(self, registry: Registry, device: str, precision: str):
        self.registry = registry
        self.device = device
        self.precision = precision
        self.generator = None
        self.upscaler = None

    def ping(self) -> int:
        """The worker's process id (the driver's sign that a restarted worker is back)."""
        return os.getpid()

    def run(self, request: DreamRequest, spec: ModelSpec, init=None, mask=None, notes: bool = False) -> dict:
        """Make one image: {"image", "request", "post", "original", "model_hash", "notes", "pid"},
        or {"error": one line} when the model or the image cannot be made."""
        from ..engines.protocols import GenerationError
        try:
            return self._run(request, spec, init, mask, notes)
        except (GenerationError, OSError, ValueError) as e:
            text = str(e).strip().splitlines()
            return {"error": text[0] if text else type(e).__name__, "pid": os.getpid()}

    def _run(self, request, spec, init, mask, notes) -> dict:
        if self.generator is None:
            from ..engines.generator import DiffusersGenerator
            self.generator = DiffusersGenerator(device=self.device, precision=self.precision,
                                                folders=self.registry.folders)
            self.generator.esrgan = lambda image, factor: self._esrgan().upscale(image, factor, 1.0)
        if self.generator.spec != spec:
            self.generator.load(spec)
        told = []
        if notes:
            if request.log_tokenization:
                told.append(self.generator.tokenization(request.prompt))
            told += self.generator.prompt_notes(request.prompt)
        image = self.generator.generate(request, init_image=init, mask=mask)
        if mask is not None:  # the unmasked part exactly as it was, as the local run keeps it
            from PIL import Image
            image = Image.composite(image.convert("RGB"), init, mask.point(lambda v: 255 if v >= 128 else 0))
        from ..weights.library import Library
        out = {"image": image, "request": request, "post": (), "original": None, "notes": told,
               "model_hash": self.generator.model_hash or "", "pid": os.getpid(),
               "extras": Library(self.registry.folders).recipe_extras(request.prompt, request.vae)}
        if request.upscale:
            up = self._upscale(image, request)
            out["notes"] = told + up.pop("notes", [])
            out.update(up)
        return out

    def _esrgan(self):
        if self.upscaler is None:
            from ..engines.upscaler import make_upscaler
            self.upscaler = make_upscaler(self.registry, self.device)
        return self.upscaler

    def _upscale(self, image, request: DreamRequest) -> dict:
        """As the local run: upscaled, or kept as it is with -U dropped from its recipe and a note."""
        from ..engines.protocols import GenerationError
        spec = request.upscale
        try:
            up = self._esrgan().upscale(image, spec.factor, spec.strength)
        except (GenerationError, OSError, ValueError) as e:
            return {"request": request.with_(upscale=None, save_original=False),
                    "notes": [f"-U: {e}; the image is saved without upscaling"]}
        return {"image": up, "original": image if request.save_original else None,
                "post": ({"type": "esrgan", "scale": spec.factor, "strength": spec.strength},)}
