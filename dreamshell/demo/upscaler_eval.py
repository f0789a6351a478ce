"""The demo upscaler measured: PSNR over bicubic on held-out 64x64 -> 256x256 shape images (imports torch
when measuring). scripts/train_demo_upscaler.py trains and reports it; tests/test_upscale.py checks it."""

from __future__ import annotations

import math
import random

import numpy as np
from PIL import Image

from . import shapes


def psnr(a, b) -> float:
    import torch.nn.functional as F
    mse = F.mse_loss(a.clamp(0, 1), b).item()
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def evaluate(model, n: int = 64, seed: int = 12345) -> dict:
    """PSNR of the model and of bicubic upsampling on held-out 64x64 -> 256x256 shape images."""
    import torch
    rng = random.Random(seed)
    bic, ours = [], []
    with torch.no_grad():
        for _ in range(n):
            hr_img = shapes.render(shapes.random_scene(rng), rng, scale=4)
            lr_img = hr_img.resize((64, 64), Image.BICUBIC)
            hr = torch.from_numpy(np.asarray(hr_img, np.float32) / 255).permute(2, 0, 1)[None]
            lr = torch.from_numpy(np.asarray(lr_img, np.float32) / 255).permute(2, 0, 1)[None]
            up = torch.from_numpy(np.asarray(lr_img.resize((256, 256), Image.BICUBIC), np.float32) / 255)
            bic.append(psnr(up.permute(2, 0, 1)[None], hr))
            ours.append(psnr(model(lr), hr))
    return {"images": n, "bicubic_psnr": round(float(np.mean(bic)), 2), "model_psnr": round(float(np.mean(ours)), 2),
            "gain_db": round(float(np.mean(ours) - np.mean(bic)), 2)}
