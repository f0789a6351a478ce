#!/usr/bin/env python
"""Train the built-in demo upscaler: a small Real-ESRGAN Compact (SRVGGNetCompact, x4) on synthetic
images like the demo model's (shapes drawn at 4x) and procedural textures, MSE loss, fixed seeds.
Then measure PSNR over bicubic on held-out images and save models/upscaler/demo-x4.safetensors with
the official key names.

    python scripts/train_demo_upscaler.py --steps 3000
    python scripts/train_demo_upscaler.py --eval_only
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from dreamshell.demo import shapes  # noqa: E402
from dreamshell.demo.upscaler_eval import evaluate  # noqa: E402
from dreamshell.engines.esrgan import SRVGGNetCompact, build_from_state_dict  # noqa: E402

OUT = ROOT / "models" / "upscaler" / "demo-x4.safetensors"
CONFIG = dict(num_in_ch=3, num_out_ch=3, num_feat=32, num_conv=8, upscale=4, act_type="prelu")


def texture(rng: random.Random, size: int) -> Image.Image:
    """Stripes, checks, rings or a gradient in two random colours, sometimes blurred."""
    a = tuple(rng.randint(0, 255) for _ in range(3))
    b = tuple(rng.randint(0, 255) for _ in range(3))
    img = Image.new("RGB", (size, size), a)
    d = ImageDraw.Draw(img)
    kind = rng.choice(["stripes", "checks", "rings", "gradient"])
    step = rng.randint(4, 32)
    if kind == "stripes":
        for x in range(-size, size * 2, step * 2):
            d.polygon([(x, 0), (x + step, 0), (x + step + size // 2, size), (x + size // 2, size)], fill=b)
    elif kind == "checks":
        for y in range(0, size, step):
            for x in range((y // step) % 2 * step, size, step * 2):
                d.rectangle((x, y, x + step - 1, y + step - 1), fill=b)
    elif kind == "rings":
        c = size // 2
        for r in range(size, 0, -step):
            d.ellipse((c - r, c - r, c + r, c + r), fill=b if (r // step) % 2 else a)
    else:
        arr = np.linspace(0, 1, size)[None, :, None] * (np.array(b) - np.array(a)) + np.array(a)
        img = Image.fromarray(np.repeat(arr, size, 0).astype(np.uint8))
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2)))
    return img


def pair(rng: random.Random, hr_size: int = 128, shapes_share: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """(low-res, high-res) arrays in [0,1]: a 4x shapes scene crop or a texture, bicubic-downscaled."""
    if rng.random() < shapes_share:
        full = shapes.render(shapes.random_scene(rng), rng, scale=4)
        x, y = rng.randint(0, 256 - hr_size), rng.randint(0, 256 - hr_size)
        hr = full.crop((x, y, x + hr_size, y + hr_size))
    else:
        hr = texture(rng, hr_size)
    lr = hr.resize((hr_size // 4, hr_size // 4), Image.BICUBIC)
    return np.asarray(lr, np.float32) / 255, np.asarray(hr, np.float32) / 255


def batch(rng, n):
    lrs, hrs = zip(*(pair(rng) for _ in range(n)))
    to = lambda a: torch.from_numpy(np.stack(a)).permute(0, 3, 1, 2)  # noqa: E731
    return to(lrs), to(hrs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--eval_only", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.eval_only:
        from safetensors.torch import load_file
        print(json.dumps(evaluate(build_from_state_dict(load_file(str(OUT)))), indent=2))
        return 0
    torch.manual_seed(0)
    rng = random.Random(0)
    model = SRVGGNetCompact(**CONFIG)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    t0, cpu0 = time.time(), time.process_time()
    for step in range(1, args.steps + 1):
        for g in opt.param_groups:
            g["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * step / args.steps)) + 1e-6
        lr, hr = batch(rng, args.batch)
        loss = F.mse_loss(model(lr), hr)  # MSE: PSNR is what is measured, and L1's sharp guesses lose there
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 250 == 0:
            print(f"step {step}/{args.steps} mse {loss.item():.5f} ({time.time() - t0:.0f} s)", flush=True)
    model.eval()
    figures = evaluate(model)
    figures.update(steps=args.steps, batch=args.batch, lr=args.lr, cpu_minutes=round((time.process_time() - cpu0) / 60, 1),
                   params=sum(p.numel() for p in model.parameters()), config=CONFIG)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(OUT))
    (OUT.parent / "demo-x4.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
