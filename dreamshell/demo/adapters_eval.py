"""The shipped demo adapters measured through dreamshell itself (the generator and the LoRA/embedding
folders a user gets), by pixels (demo/concepts.py); bench/eval_demo_adapters.py prints it, and
tests/test_demo_adapters.py runs a CI-sized sample. Imports torch when measuring.

- LoRA `demo_cross`: `a C cross on a B background <lora:demo_cross:1>` draws a cross; without the tag it
  does not. Base prompts (24 of the usual 90) with the tag vs without: colour/shape/background adherence.
- Embedding `yolk`: `a yolk on a B background` draws a yellow circle; with the embeddings folder empty,
  the same words are plain text.
- The demo VAE as one LDM-layout file (models/vae/demo-vae.safetensors) through `--vae`: the same bytes.
"""

from __future__ import annotations

import hashlib
import itertools
import tempfile
import time
from pathlib import Path


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
    from dreamshell.line.request import DreamRequest
    from dreamshell.weights.library import Folders
    from dreamshell.weights.models import builtin_models_dir, demo_spec

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
