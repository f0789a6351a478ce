#!/usr/bin/env python
"""Fit the demo model's live-preview projection: latent (4 channels) -> RGB, linear with a bias.

Least squares from the demo VAE's latents (posterior samples times the scaling factor: what the UNet
was trained on and so makes) of procedurally drawn shapes (dreamshell/demo/shapes.py) to the same images box-downsampled to
latent size (factor 4: 64x64 -> 16x16), in [-1, 1]. Samples, not posterior means: this small VAE's
first channel is mostly posterior noise, which a fit on means weighs heavily and previews then show
as speckle. Reports the error on held-out images and writes
models/demo/latent_rgb.json, which the generator reads for live previews of that model.

    python scripts/fit_demo_latent_rgb.py [--images 2048] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from dreamshell.demo import shapes  # noqa: E402

MODEL = ROOT / "models" / "demo"


def sample(vae, rng: random.Random, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(latent pixels (n*h*w, 4), RGB pixels at latent size (n*h*w, 3)) for n random scenes."""
    images = [shapes.render(shapes.random_scene(rng), rng) for _ in range(n)]
    x = torch.from_numpy(np.stack([np.asarray(i, np.float32) for i in images])).permute(0, 3, 1, 2) / 127.5 - 1
    noise = torch.Generator().manual_seed(rng.randrange(2**31))
    with torch.no_grad():
        z = torch.cat([vae.encode(x[i:i + 128]).latent_dist.sample(noise) for i in range(0, n, 128)])
    z = z * vae.config.scaling_factor
    h, w = z.shape[2:]
    small = [np.asarray(i.resize((w, h), Image.Resampling.BOX), np.float32) / 127.5 - 1 for i in images]
    return z.permute(0, 2, 3, 1).reshape(-1, 4).numpy(), np.stack(small).reshape(-1, 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--images", type=int, default=2048, help="training images (default 2048)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=MODEL / "latent_rgb.json")
    args = ap.parse_args()

    from diffusers import AutoencoderKL
    vae = AutoencoderKL.from_pretrained(MODEL / "vae", torch_dtype=torch.float32).eval()
    z, rgb = sample(vae, random.Random(args.seed), args.images)
    a = np.concatenate([z, np.ones((len(z), 1), np.float32)], axis=1)
    coef, *_ = np.linalg.lstsq(a.astype(np.float64), rgb.astype(np.float64), rcond=None)
    factors, bias = coef[:4], coef[4]

    zt, rgbt = sample(vae, random.Random(args.seed + 1_000_003), 256)
    pred = np.clip(zt @ factors + bias, -1, 1)
    rmse = float(np.sqrt(((pred - rgbt) ** 2).mean()) * 127.5)
    mean_err = float(np.abs(pred.reshape(256, -1, 3).mean(1) - rgbt.reshape(256, -1, 3).mean(1)).mean() * 127.5)
    print(f"held-out 256 images: per-pixel RMSE {rmse:.1f}/255, per-image mean colour error {mean_err:.2f}/255")

    data = {
        "source": f"scripts/fit_demo_latent_rgb.py (least squares, {args.images} images, seed {args.seed})",
        "factors": [[round(float(v), 5) for v in row] for row in factors],
        "bias": [round(float(v), 5) for v in bias],
        "held_out": {"images": 256, "rmse_255": round(rmse, 2), "mean_colour_error_255": round(mean_err, 2)},
    }
    args.out.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
