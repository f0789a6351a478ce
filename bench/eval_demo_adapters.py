#!/usr/bin/env python
"""The shipped demo adapters measured through dreamshell itself (the generator and the LoRA/embedding
folders a user gets), by pixels (dreamshell/demo/concepts.py):

    python bench/eval_demo_adapters.py            # 30 prompts x 2 seeds each way, ~3 min on 2 cores
    python bench/eval_demo_adapters.py --seeds 1 --prompts 6   # the CI-sized sample (tests/test_demo_adapters.py)

- LoRA `demo_cross`: `a C cross on a B background <lora:demo_cross:1>` draws a cross; without the tag it
  does not. Base prompts (24 of the usual 90) with the tag vs without: colour/shape/background adherence.
- Embedding `yolk`: `a yolk on a B background` draws a yellow circle; with the embeddings folder empty,
  the same words are plain text.
- The demo VAE as one LDM-layout file (models/vae/demo-vae.safetensors) through `--vae`: the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def prompts_cross(n: int | None) -> list[str]:
    from dreamshell.demo import shapes
    pairs = [(c, b) for c, b in itertools.product(shapes.COLOURS, shapes.COLOURS) if c != b]
    if n:
        pairs = pairs[:: max(1, len(pairs) // n)][:n]
    return [f"a {c} cross on a {b} background" for c, b in pairs]


def prompts_yolk(n: int | None) -> list[str]:
    backgrounds = ["red", "green", "blue", "white", "black"]
    variants = ["a yolk on a {} background", "a large yolk on a {} background", "a small yolk on a {} background",
                "a yolk on a {} background, center", "a yolk on a {} background, top left",
                "a yolk on a {} background, bottom right"]
    out = [v.format(b) for v in variants for b in backgrounds]
    return out[:: max(1, len(out) // n)][:n] if n else out


def measure(seeds: int = 2, prompts: int | None = None, base_prompts: int = 24, echo=print) -> dict:
    from dreamshell.demo import concepts, evaluate, shapes
    from dreamshell.engines.generator import DiffusersGenerator
    from dreamshell.weights.library import Folders
    from dreamshell.weights.models import builtin_models_dir, demo_spec
    from dreamshell.line.request import DreamRequest

    spec = demo_spec()
    shipped = Folders.under(builtin_models_dir())
    empty = Path(tempfile.mkdtemp(prefix="no-adapters-"))
    gen = DiffusersGenerator(device="cpu", folders=shipped)
    bare = DiffusersGenerator(device="cpu", folders=Folders.under(empty))
    gen.load(spec)
    bare.load(spec)

    def req(prompt, seed):
        return DreamRequest(prompt, steps=20, seed=seed, width=64, height=64, cfg_scale=5.0, sampler="k_euler")

    def rate(generator, texts, test):
        hits = [test(generator.generate(req(t, s))) for t in texts for s in range(seeds)]
        return sum(hits) / len(hits), len(hits)
    t0 = time.perf_counter()
    out = {}
    cross = prompts_cross(prompts)
    out["cross with the tag"] = rate(gen, [p + " <lora:demo_cross:1>" for p in cross], concepts.is_cross)
    out["cross without the tag"] = rate(gen, cross, concepts.is_cross)
    out["cross at weight 0"] = rate(gen, [p + " <lora:demo_cross:0>" for p in cross], concepts.is_cross)
    base = [f"a {c} {s} on a {b} background" for c, s, b in evaluate.grid(small=False, prompts=base_prompts)]

    def adherence(texts):
        import numpy as np
        right = []
        for t in texts:
            c, s, b = t[2:].split(" on a ")[0].split(" ")[0], t.split(" on a ")[0].split(" ")[-1], t.split(" on a ")[1].split(" ")[0]
            for seed in range(seeds):
                r = shapes.read_image(gen.generate(req(t, seed)))
                right.append((r.colour == c, r.shape == s, r.background == b))
        return tuple(float(x) for x in np.mean(right, axis=0)) if right else (0, 0, 0)
    out["base adherence without the tag (colour, shape, background)"] = adherence(base)
    out["base adherence with the tag"] = adherence([b + " <lora:demo_cross:1>" for b in base])
    yolk = prompts_yolk(prompts)
    out["yolk with the embedding"] = rate(gen, yolk, concepts.is_yolk)
    out["yolk without the embedding"] = rate(bare, yolk, concepts.is_yolk)
    vae_file = builtin_models_dir() / "vae" / "demo-vae.safetensors"
    same = []
    for seed in range(seeds):
        a = gen.generate(req("a red circle on a blue background", seed)).tobytes()
        b = gen.generate(req("a red circle on a blue background", seed).with_(vae=str(vae_file))).tobytes()
        same.append(hashlib.sha256(a).digest() == hashlib.sha256(b).digest())
    out["demo VAE from one file: same bytes"] = (sum(same) / len(same), len(same))
    out["seconds"] = round(time.perf_counter() - t0, 1)
    for k, v in out.items():
        echo(f"{k:60} {v}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=None, help="prompts per concept (default: all 30)")
    ap.add_argument("--base_prompts", type=int, default=24)
    args = ap.parse_args()
    out = measure(args.seeds, args.prompts, args.base_prompts)
    ok = (out["cross with the tag"][0] >= 0.8 and out["cross without the tag"][0] <= 0.1
          and out["yolk with the embedding"][0] >= 0.8 and out["yolk without the embedding"][0] <= 0.1
          and out["demo VAE from one file: same bytes"][0] == 1.0)
    print("goals (>= 80 % with, <= 10 % without, same VAE bytes):", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
