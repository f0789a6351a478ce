"""Real-ESRGAN upscaling: load official weights, run in overlapping tiles, reach any factor, blend.

Tiles: each tile is run with `pad` pixels of context on every side and only its centre is kept, so
a large image upscales in bounded memory without seams; on out-of-memory the tile is halved.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..weights.models import Registry, builtin_models_dir
from .device import is_out_of_memory, pick_device
from .esrgan import build_from_state_dict
from .protocols import GenerationError, Interrupted

DOWNLOADS = {
    "4": "RealESRGAN_x4plus.pth from https://github.com/xinntao/Real-ESRGAN/releases",
    "2": "RealESRGAN_x2plus.pth from https://github.com/xinntao/Real-ESRGAN/releases",
}
DEMO_UPSCALER = "upscaler/demo-x4.safetensors"


def load_weights(path: Path) -> dict:
    """A state dict from .pth (weights_only, `params_ema` or `params`) or .safetensors."""
    if not path.exists():
        raise GenerationError(f"upscaler weights {path} do not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise GenerationError(f"refusing {path}: it does not load with torch.load(weights_only=True) ({e})") from None


def run_tiled(model, x: torch.Tensor, scale: int, tile: int = 256, pad: int = 16, should_stop=None) -> torch.Tensor:
    """Apply model to x (1,C,H,W) tile by tile; each tile sees `pad` pixels of context; returns (1,C,sH,sW).
    `should_stop` is asked before each tile (Ctrl-C: Interrupted)."""
    _, c, h, w = x.shape
    if tile <= 0 or (h <= tile and w <= tile):
        return model(x)
    out = x.new_zeros((1, c, h * scale, w * scale))
    for top in range(0, h, tile):
        for left in range(0, w, tile):
            if should_stop is not None and should_stop():
                raise Interrupted()
            bottom, right = min(top + tile, h), min(left + tile, w)
            t0, l0 = max(top - pad, 0), max(left - pad, 0)
            b0, r0 = min(bottom + pad, h), min(right + pad, w)
            y = model(x[:, :, t0:b0, l0:r0])
            oy, ox = (top - t0) * scale, (left - l0) * scale
            out[:, :, top * scale:bottom * scale, left * scale:right * scale] = \
                y[:, :, oy:oy + (bottom - top) * scale, ox:ox + (right - left) * scale]
    return out


class RealESRGANUpscaler:
    """Upscale PIL images with the model for 2x or 4x, resizing for other factors."""

    def __init__(self, weights: dict[str, Path], device: str = "auto", tile: int = 256, pad: int = 16):
        self.weights = weights            # "2" / "4" -> path
        self.device = pick_device(device)
        self.tile = tile
        self.pad = pad
        self._models: dict[Path, torch.nn.Module] = {}

    def _model_for(self, factor: float):
        choices = sorted(self.weights, key=lambda k: float(k))
        if not choices:
            raise GenerationError("no Real-ESRGAN weights are set: name them under 'upscalers:' in the models "
                                  f"file (download {DOWNLOADS['4']})")
        # the smallest model scale that reaches the factor, else the largest
        key = next((k for k in choices if float(k) >= factor), choices[-1])
        path = self.weights[key]
        if not path.exists():
            raise GenerationError(f"upscaler weights {path} do not exist (download "
                                  f"{DOWNLOADS.get(key, DOWNLOADS['4'])} and put it there)")
        if path not in self._models:
            try:
                model = build_from_state_dict(load_weights(path))
            except ValueError as e:
                raise GenerationError(f"{path}: {e}") from None
            self._models[path] = model.to(self.device)
        return self._models[path]

    def upscale_array(self, x: torch.Tensor, model, tile: int | None = None, should_stop=None) -> torch.Tensor:
        tile = self.tile if tile is None else tile
        while True:
            try:
                with torch.inference_mode():
                    return run_tiled(model, x.to(self.device), model.scale, tile, self.pad,
                                     should_stop).clamp(0, 1).cpu()
            except Exception as e:
                if not is_out_of_memory(e) or tile <= 32:
                    if is_out_of_memory(e):
                        raise GenerationError("out of memory while upscaling even with 32-pixel tiles; try a "
                                              "smaller factor or --device cpu") from None
                    raise
                if self.device == "cuda":
                    torch.cuda.empty_cache()
                tile = max(32, tile // 2 if tile > 0 else 256)

    def upscale(self, image: Image.Image, factor: float, strength: float = 0.75, should_stop=None) -> Image.Image:
        """Real-ESRGAN at the model's scale, resized (Lanczos) to `factor`; strength < 1 blends with a
        plain Lanczos resize of the input."""
        image = image.convert("RGB")
        target = (round(image.width * factor), round(image.height * factor))
        plain = image.resize(target, Image.LANCZOS)
        if strength <= 0:
            return plain
        model = self._model_for(factor)
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
        y = self.upscale_array(x, model, should_stop=should_stop)
        sr = Image.fromarray((y[0].permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8))
        if sr.size != target:
            sr = sr.resize(target, Image.LANCZOS)
        if strength >= 1:
            return sr
        return Image.blend(plain, sr, strength)


def make_upscaler(registry: Registry, device: str = "auto") -> RealESRGANUpscaler:
    """The upscaler for a registry: its `upscalers:` weights, else the built-in demo x4 model."""
    weights = dict(registry.upscalers)
    if not weights:
        weights = {"4": builtin_models_dir() / DEMO_UPSCALER}
    return RealESRGANUpscaler(weights, device=device)
