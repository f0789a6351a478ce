#!/usr/bin/env python
"""Image difference and speed of bfloat16 (UNet and text encoder; VAE float32) against float32 on
the CPU, over a few prompts and seeds of one model (default: the built-in demo model).

    python bench/bench_precision.py [--model PATH] [--steps 12] [--size 64]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
PROMPTS = ["a red circle on a blue background", "a green square on a white background",
           "a yellow triangle on a black background", "a small blue circle on a red background, top left"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--seeds", type=int, default=2)
    args = ap.parse_args()
    import numpy as np

    from dreamshell.engines.generator import DiffusersGenerator
    from dreamshell.engines.loading import native_bf16
    from dreamshell.weights.models import demo_spec, spec_for_path
    from dreamshell.line.parser import parse_request
    from dreamshell.run.resolve import resolve_request
    spec = demo_spec() if args.model is None else spec_for_path(Path(args.model))
    size = args.size or spec.width
    lines = [f"{p} -S {s} -s {args.steps} -W {size} -H {size}" for p in PROMPTS for s in range(1, args.seeds + 1)]
    images, seconds = {}, {}
    for precision in ("float32", "bfloat16"):
        g = DiffusersGenerator(device="cpu", precision=precision)
        g.load(spec)
        g.generate(resolve_request(parse_request(lines[0]), spec, []))  # warm up
        t = time.perf_counter()
        images[precision] = [np.asarray(g.generate(resolve_request(parse_request(line), spec, [])), float)
                             for line in lines]
        seconds[precision] = (time.perf_counter() - t) / len(lines)
        g.unload()
    diffs = [np.abs(a - b) for a, b in zip(images["float32"], images["bfloat16"])]
    print(f"model {spec.name}, {size}x{size}, {args.steps} steps, {len(lines)} images; native bf16: {native_bf16()}")
    print(f"  float32  {seconds['float32']:.3f} s/image")
    print(f"  bfloat16 {seconds['bfloat16']:.3f} s/image  (float32/bfloat16 = {seconds['float32'] / seconds['bfloat16']:.2f}x)")
    print(f"  image difference bfloat16 vs float32: mean |diff| {np.mean([d.mean() for d in diffs]):.2f}/255 "
          f"(worst image {max(d.mean() for d in diffs):.2f}), max pixel {max(d.max() for d in diffs):.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
