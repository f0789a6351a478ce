"""Shared parts of the demo adapter trainers (scripts/train_demo_lora.py, scripts/train_demo_embedding.py).

The demo model's parts in float32, the training noise (as scripts/train_demo_model.py: epsilon
prediction, SD 1.x schedule, offset noise 0.1), and the evaluation sampler: a plain diffusers
StableDiffusionPipeline with EulerDiscreteScheduler from the model's scheduler config, 20 steps,
CFG 5, 64x64, one CPU torch.Generator per image (so the starting noise is the same on any device).
"""

from __future__ import annotations

import logging
import os
import platform
import random
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from dreamshell.demo import shapes  # noqa: E402

MODEL = ROOT / "models" / "demo"
STEPS, CFG, SIZE = 20, 5.0, 64
SEEDS = (0, 1)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def seed_all(seed: int) -> random.Random:
    torch.manual_seed(seed)
    np.random.seed(seed)
    return random.Random(seed)


def load_parts(device: torch.device):
    """tokenizer, text encoder, VAE, UNet (float32, frozen, on `device`) and the schedule's alphas_cumprod."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(MODEL / "tokenizer", local_files_only=True)
    text = CLIPTextModel.from_pretrained(MODEL / "text_encoder", local_files_only=True, dtype=torch.float32)
    vae = AutoencoderKL.from_pretrained(MODEL / "vae", local_files_only=True, dtype=torch.float32)
    unet = UNet2DConditionModel.from_pretrained(MODEL / "unet", local_files_only=True, dtype=torch.float32)
    for m in (text, vae, unet):
        m.requires_grad_(False)
        m.to(device)
    vae.eval()
    sched = DDPMScheduler.from_pretrained(MODEL / "scheduler", local_files_only=True)
    return tok, text, vae, unet, sched.alphas_cumprod.to(device)


def images_to_tensor(imgs) -> torch.Tensor:
    return torch.from_numpy(np.stack([np.asarray(i, dtype=np.float32) for i in imgs])).permute(0, 3, 1, 2) / 127.5 - 1.0


def base_example(rng: random.Random):
    """One scene of the base model's training data: (image, caption)."""
    scene = shapes.random_scene(rng)
    return shapes.render(scene, rng), scene.caption(with_size=rng.random() < 0.5,
                                                     with_position=rng.random() < 0.5)


def ids_for(tok, captions: list[str], device) -> torch.Tensor:
    return tok(captions, padding="max_length", max_length=77, truncation=True,
               return_tensors="pt").input_ids.to(device)


def noisy(vae, x: torch.Tensor, alphas: torch.Tensor, gen: torch.Generator):
    """Latents, noised as in the base training: (z_t, t, noise)."""
    device = alphas.device
    with torch.no_grad():
        z = vae.encode(x.to(device)).latent_dist.mean * vae.config.scaling_factor
    n = z.shape[0]
    noise = torch.randn(z.shape, generator=gen).to(device) + 0.1 * torch.randn((n, z.shape[1], 1, 1), generator=gen).to(device)
    t = torch.randint(0, 1000, (n,), generator=gen).to(device)
    a = alphas[t].view(-1, 1, 1, 1)
    return a.sqrt() * z + (1 - a).sqrt() * noise, t, noise


def pipeline(device: torch.device):
    """The evaluation pipeline: plain diffusers, float32, Euler."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(MODEL, local_files_only=True, safety_checker=None,
                                                   dtype=torch.float32)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def generate(pipe, prompts: list[str], seeds=SEEDS, batch: int = 64) -> list:
    """Each prompt with each seed (prompt-major), 20 Euler steps, CFG 5, 64x64."""
    jobs = [(p, s) for p in prompts for s in seeds]
    out = []
    for i in range(0, len(jobs), batch):
        chunk = jobs[i:i + batch]
        gens = [torch.Generator("cpu").manual_seed(s) for _, s in chunk]
        with torch.no_grad():
            res = pipe([p for p, _ in chunk], num_inference_steps=STEPS, guidance_scale=CFG, height=SIZE,
                       width=SIZE, generator=gens)
        out.extend(res.images)
    return out


def base_prompts(n: int = 24) -> list[tuple[str, str, str]]:
    """A spread-out sample of the usual 90 colour x shape x background prompts (as evaluate.grid)."""
    from dreamshell.demo.evaluate import grid
    return grid(small=True, prompts=n)


def base_adherence(pipe, n: int = 24) -> tuple[dict, list]:
    """shapes.read_image over `n` base prompts x 2 seeds: colour, shape, background and all three;
    and the images."""
    triples = base_prompts(n)
    imgs = generate(pipe, [f"a {c} {s} on a {b} background" for c, s, b in triples])
    hits = {"colour": 0, "shape": 0, "background": 0, "all": 0}
    for (c, s, b), img in zip([t for t in triples for _ in SEEDS], imgs):
        r = shapes.read_image(img)
        hits["colour"] += r.colour == c
        hits["shape"] += r.shape == s
        hits["background"] += r.background == b
        hits["all"] += (r.colour, r.shape, r.background) == (c, s, b)
    return {k: round(v / len(imgs), 4) for k, v in hits.items()} | {"images": len(imgs)}, imgs


class CaptureWarnings:
    """Collect Python warnings and WARNING+ log records (diffusers, peft, transformers) in a block."""

    def __enter__(self):
        self.messages: list[str] = []
        self._w = warnings.catch_warnings(record=True)
        self._rec = self._w.__enter__()
        warnings.simplefilter("always")
        outer = self

        class H(logging.Handler):
            def emit(self, record):
                outer.messages.append(f"{record.name}: {record.getMessage()}")

        self._h = H(level=logging.WARNING)
        self._loggers = [logging.getLogger(n) for n in ("diffusers", "peft", "transformers")]
        for lg in self._loggers:
            lg.addHandler(self._h)
        return self

    def __exit__(self, *exc):
        for lg in self._loggers:
            lg.removeHandler(self._h)
        self._w.__exit__(*exc)
        self.messages += [f"{w.category.__name__}: {w.message}" for w in self._rec]
        return False


class Timer:
    def __init__(self):
        self.t0 = time.perf_counter()

    def __call__(self) -> float:
        return round(time.perf_counter() - self.t0, 1)


def fmt_rate(x: float) -> str:
    return f"{100 * x:.1f}%"
