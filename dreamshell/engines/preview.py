"""Live previews: a denoising latent mapped to RGB by a linear 4->3 projection ("approx cheap"; 16->3 for
SD 3 and FLUX.1).

The projection works on the latent the UNet sees (VAE latent times its scaling factor) and gives RGB in
[-1, 1]: rgb = latent . factors + bias. It costs one 4x3 matrix product on a (h/8 x w/8) latent
(0.1 to 0.4 ms), so it can run at every step. `PreviewTap` catches the scheduler's prediction of the clean latent.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

FILE_NAME = "latent_rgb.json"   # a model folder's own fit (the demo model ships one)


@dataclass(frozen=True)
class LatentRGB:
    """A linear map from 4 latent channels to RGB in [-1, 1]; `source` says where the numbers are from."""

    factors: tuple[tuple[float, float, float], ...]   # one (R, G, B) row per latent channel
    bias: tuple[float, float, float] = (0.0, 0.0, 0.0)
    source: str = ""

    @classmethod
    def from_file(cls, path: Path) -> "LatentRGB":
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        factors = tuple(tuple(float(v) for v in row) for row in data["factors"])
        if len(factors) != 4 or any(len(row) != 3 for row in factors) or len(data.get("bias", [0] * 3)) != 3:
            raise ValueError(f"{path}: 'factors' must be 4 rows of 3 numbers and 'bias' 3 numbers")
        return cls(factors, tuple(float(v) for v in data.get("bias", (0, 0, 0))), data.get("source", str(path)))


# SD 1.x (and 2.x, same VAE): ComfyUI comfy/latent_formats.py class SD15 (used by ComfyUI for SD2 too).
# A1111's modules/sd_vae_approx.py cheap_approximation and InvokeAI's step_callback.py
# SD1_5_LATENT_RGB_FACTORS are close variants of the same least-squares fit.
SD1 = LatentRGB(((0.3512, 0.2297, 0.3227),
                 (0.3250, 0.4974, 0.2350),
                 (-0.2829, 0.1762, 0.2721),
                 (-0.2120, -0.2616, -0.7177)),
                source="ComfyUI comfy/latent_formats.py SD15")

# SDXL: ComfyUI comfy/latent_formats.py class SDXL (factors and bias). InvokeAI's
# SDXL_LATENT_RGB_FACTORS is another fit of the same VAE.
SDXL = LatentRGB(((0.3651, 0.4232, 0.4341),
                  (-0.2533, -0.0042, 0.1068),
                  (0.1076, 0.1111, -0.0362),
                  (-0.3165, -0.2492, -0.2188)),
                 bias=(0.1084, -0.0175, -0.0011),
                 source="ComfyUI comfy/latent_formats.py SDXL")


# Playground v2.5 (its own latent statistics), SD 3 and FLUX.1 (16 channels): ComfyUI comfy/latent_formats.py
# classes SDXL_Playground_2_5, SD3 and Flux.
PLAYGROUND = LatentRGB(((0.3920, 0.4054, 0.4549),
                        (-0.2634, -0.0196, 0.0653),
                        (0.0568, 0.1687, -0.0755),
                        (-0.3112, -0.2359, -0.2076)),
                       source="ComfyUI comfy/latent_formats.py SDXL_Playground_2_5")
SD3 = LatentRGB(((-0.0922, -0.0175, 0.0749), (0.0311, 0.0633, 0.0954), (0.1994, 0.0927, 0.0458),
                 (0.0856, 0.0339, 0.0902), (0.0587, 0.0272, -0.0496), (-0.0006, 0.1104, 0.0309),
                 (0.0978, 0.0306, 0.0427), (-0.0042, 0.1038, 0.1358), (-0.0194, 0.0020, 0.0669),
                 (-0.0488, 0.0130, -0.0268), (0.0922, 0.0988, 0.0951), (-0.0278, 0.0524, -0.0542),
                 (0.0332, 0.0456, 0.0895), (-0.0069, -0.0030, -0.0810), (-0.0596, -0.0465, -0.0293),
                 (-0.1448, -0.1463, -0.1189)),
                bias=(0.2394, 0.2135, 0.1925), source="ComfyUI comfy/latent_formats.py SD3")
FLUX = LatentRGB(((-0.0346, 0.0244, 0.0681), (0.0034, 0.0210, 0.0687), (0.0275, -0.0668, -0.0433),
                  (-0.0174, 0.0160, 0.0617), (0.0859, 0.0721, 0.0329), (0.0004, 0.0383, 0.0115),
                  (0.0405, 0.0861, 0.0915), (-0.0236, -0.0185, -0.0259), (-0.0245, 0.0250, 0.1180),
                  (0.1008, 0.0755, -0.0421), (-0.0515, 0.0201, 0.0011), (0.0428, -0.0012, -0.0036),
                  (0.0817, 0.0765, 0.0749), (-0.1264, -0.0522, -0.1103), (-0.0280, -0.0881, -0.0499),
                  (-0.1262, -0.0982, -0.0778)),
                 bias=(-0.0329, -0.0718, -0.0851), source="ComfyUI comfy/latent_formats.py Flux")


def projection_for(spec) -> LatentRGB:
    """The projection for a model spec: a latent_rgb.json in its folder wins, else by spec.kind."""
    weights = Path(spec.weights)
    if weights.is_dir() and (weights / FILE_NAME).exists():
        return LatentRGB.from_file(weights / FILE_NAME)
    kind = spec.kind or ""
    if kind.startswith(("sd3", "sd35")):
        return SD3
    if kind.startswith("flux"):
        return FLUX
    if kind == "sdxl-playground":
        return PLAYGROUND
    return SDXL if kind.startswith("sdxl") else SD1


def latent_to_image(latent, projection: LatentRGB, size: tuple[int, int] | None = None,
                    resample: int = Image.Resampling.BILINEAR) -> Image.Image:
    """A (1, 4, h, w) latent as an RGB image of w x h pixels (or resized to `size`, (width, height)).

    The product runs in numpy on the CPU: on a busy CPU torch's thread pool made this tiny product
    take 3 to 40 ms instead of 0.1 to 0.4 ms."""
    import torch
    x = latent[0].detach().to("cpu", torch.float32).numpy()
    rgb = np.tensordot(x, np.asarray(projection.factors, np.float32), axes=([0], [0]))
    rgb += np.asarray(projection.bias, np.float32)
    pixels = np.clip((rgb + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    return image if size is None or image.size == tuple(size) else image.resize(tuple(size), resample)


class PreviewTap:
    """For one generation: remembers the scheduler's latest predicted clean latent
    (`pred_original_sample` where the scheduler returns it, the x0 model output of the DPM-Solver and
    UniPC families) and turns it, or else the current latents, into preview images every few steps."""

    def __init__(self, projection: LatentRGB, on_preview, every: int = 1):
        if every < 1:
            raise ValueError(f"preview_every must be 1 or more, not {every}")
        self.projection, self.on_preview, self.every = projection, on_preview, every
        self.predicted = None

    @contextlib.contextmanager
    def attached(self, scheduler):
        """Wrap scheduler.step for the duration of the block; the original is restored afterwards."""
        original, had_own = scheduler.step, "step" in vars(scheduler)
        tap = self

        def step(*args, return_dict: bool = True, **kwargs):
            out = original(*args, return_dict=True, **kwargs)
            tap.predicted = getattr(out, "pred_original_sample", None)
            if tap.predicted is None and _predicts_x0(scheduler) and getattr(scheduler, "model_outputs", None):
                tap.predicted = scheduler.model_outputs[-1]
            return out if return_dict else out.to_tuple()

        scheduler.step = step
        try:
            yield self
        finally:
            if had_own:
                scheduler.step = original
            else:
                del scheduler.step  # back to the class's method

    def __call__(self, step: int, total: int, latents) -> None:
        """After model evaluation `step` (1-based) of `total`: a preview every `every` steps and at the last."""
        if step % self.every and step != total:
            return
        latent = self.predicted if self.predicted is not None else latents
        channels = getattr(self.projection, "channels", None) or len(self.projection.factors)
        if latent is None or latent.ndim != 4 or latent.shape[1] != channels:
            return
        to_image = getattr(self.projection, "to_image", None)   # a tiny decoder (engines/decoders.TinyPreview)
        self.on_preview(step, total, to_image(latent) if to_image else latent_to_image(latent, self.projection))


def _predicts_x0(scheduler) -> bool:
    """DPM-Solver(++)/UniPC keep their converted model output in model_outputs; it is x0 only for
    the data-prediction variants."""
    config = scheduler.config
    if "algorithm_type" in config:
        return config["algorithm_type"] in ("dpmsolver++", "sde-dpmsolver++")
    return bool(config.get("predict_x0", False))
