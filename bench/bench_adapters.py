#!/usr/bin/env python
"""What LoRAs, embeddings, clip skip, a VAE swap and the hires fix cost, through dreamshell's generator.

    python bench/bench_adapters.py                      # the demo model on this machine's device
    python bench/bench_adapters.py --model /path/sd15.safetensors --size 512 --steps 20 --device cuda

For the model given it makes a random kohya-layout LoRA over the UNet's attention and the text
encoder (rank 16, like the LoRAs people download) and a random 2-vector embedding, then times side by
side in one run: a plain image; the first LoRA line (load + image); the same LoRA line again; two
LoRAs; weight 0; an embedding line; --clip_skip 2; a single-file VAE; the hires fix (latent, scale
2) against a plain image at the target size. It also checks, on this device, that a plain line after
the LoRA lines makes the same bytes as before them, and that weight 0 equals no tag.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="a weights file or diffusers folder (default: the demo model)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from adapters import make_embedding, make_kohya_lora
    from dreamshell.engines.generator import DiffusersGenerator
    from dreamshell.weights.library import Folders
    from dreamshell.weights.models import demo_spec, spec_for_path
    from dreamshell.line.request import DreamRequest

    spec = spec_for_path(Path(args.model)) if args.model else demo_spec()
    size = args.size or spec.width
    root = Path(tempfile.mkdtemp(prefix="bench-adapters-"))
    gen = DiffusersGenerator(device=args.device, precision=args.precision, folders=Folders.under(root))
    t = time.perf_counter()
    gen.load(spec)
    load_s = time.perf_counter() - t
    pipe = gen._pipes["txt2img"]
    t = time.perf_counter()
    make_kohya_lora(root / "loras" / "a.safetensors", seed=1, rank=16, scale=0.05, unet=pipe.unet, te=pipe.text_encoder)
    make_kohya_lora(root / "loras" / "b.safetensors", seed=2, rank=16, scale=0.05, unet=pipe.unet, te=pipe.text_encoder)
    width = pipe.text_encoder.get_input_embeddings().weight.shape[-1]
    make_embedding(root / "embeddings" / "zzword.safetensors", seed=3, width=width, scale=0.01)
    from safetensors.torch import save_file
    (root / "vae").mkdir()
    save_file({k: v.detach().cpu().contiguous() for k, v in pipe.vae.state_dict().items()},
              str(root / "vae" / "same.safetensors"))
    make_s = time.perf_counter() - t
    base = DreamRequest("a lighthouse at dusk, oil painting", steps=args.steps, seed=7, width=size, height=size,
                        cfg_scale=7.0, sampler="k_euler")

    def image(req):
        if gen.device == "cuda":
            gen.torch.cuda.synchronize()
        t0 = time.perf_counter()
        im = gen.generate(req)
        if gen.device == "cuda":
            gen.torch.cuda.synchronize()
        return time.perf_counter() - t0, hashlib.sha256(im.tobytes()).hexdigest()[:16], im.size

    rows: dict[str, list[float]] = {}
    hashes: dict[str, str] = {}

    def run(label, req, times=args.repeat):
        for _ in range(times):
            s, h, sz = image(req)
            rows.setdefault(label, []).append(s)
            hashes[label] = h

    run("plain (warm-up)", base, 1)
    run("plain", base)
    run("first LoRA line (load + image)", base.with_(prompt=base.prompt + " <lora:a:0.8>"), 1)
    run("one LoRA", base.with_(prompt=base.prompt + " <lora:a:0.8>"))
    run("two LoRAs", base.with_(prompt=base.prompt + " <lora:a:0.8> <lora:b:0.5>"))
    run("LoRA weight 0", base.with_(prompt=base.prompt + " <lora:a:0>"), 1)
    run("plain after LoRAs", base, 1)
    run("embedding", base.with_(prompt="a zzword at dusk, oil painting"))
    run("clip skip 2", base.with_(clip_skip=2))
    run("VAE from one file (first: load)", base.with_(vae="same.safetensors"), 1)
    run("VAE from one file", base.with_(vae="same.safetensors"))
    hires = base.with_(hires_fix=True, hires_scale=2.0, hires_steps=args.steps, hires_strength=0.5,
                       hires_upscaler="latent")
    run("hires fix latent x2", hires, max(1, args.repeat - 1))
    run("plain at the target size", base.with_(width=size * 2, height=size * 2), max(1, args.repeat - 1))
    med = {k: sorted(v)[len(v) // 2] for k, v in rows.items()}
    checks = {
        "plain after the LoRA lines == plain before": hashes["plain after LoRAs"] == hashes["plain"],
        "weight 0 == plain": hashes["LoRA weight 0"] == hashes["plain"],
        "one file VAE (same weights) == plain": hashes["VAE from one file"] == hashes["plain"],
        "clip skip 2 != plain": hashes["clip skip 2"] != hashes["plain"],
        "one LoRA != plain": hashes["one LoRA"] != hashes["plain"],
    }
    print(f"model {spec.name} ({gen.kind}) on {gen.device} {gen.precision}, {size}x{size}, {args.steps} steps; "
          f"load {load_s:.1f} s; test files made in {make_s:.1f} s")
    print(f"{'what':40} {'median s':>9} {'vs plain':>9}")
    for k, v in med.items():
        print(f"{k:40} {v:9.3f} {v / med['plain']:9.2f}")
    for k, ok in checks.items():
        print(f"check: {k}: {'yes' if ok else 'NO'}")
    if args.json:
        args.json.write_text(json.dumps({"median_s": med, "checks": checks, "device": gen.device,
                                         "precision": gen.precision, "size": size, "steps": args.steps,
                                         "load_s": load_s}, indent=1))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
