#!/usr/bin/env python
"""Cost of live previews: seconds per image with previews off, on (the projected image at every
step), and on + half-block fragments (what the shell draws), interleaved rounds, medians and ratios;
plus the time spent inside the preview itself, per call.

    python bench/bench_preview.py [--rounds 10] [--steps 20] [--size 64] [--every 1]
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", type=int, default=64, help="image width and height (the demo model's is 64)")
    ap.add_argument("--every", type=int, default=1, help="preview_every")
    args = ap.parse_args()

    import torch

    from dreamshell.engines import preview as pv
    from dreamshell.engines.generator import DiffusersGenerator
    from dreamshell.weights.models import demo_spec
    from dreamshell.line.parser import parse_request
    from dreamshell.run.resolve import resolve_request
    from dreamshell.shell.thumbnails import block_fragments

    spec = demo_spec()
    gen = DiffusersGenerator(device="cpu")
    gen.load(spec)
    request = resolve_request(parse_request(
        f"a red circle on a blue background -S 1 -s {args.steps} -W {args.size} -H {args.size}"), spec, [])

    inside = []  # seconds spent in latent_to_image (+ fragments), per call
    project = pv.latent_to_image

    def timed_projection(*a, **k):
        t = time.perf_counter()
        image = project(*a, **k)
        inside.append(time.perf_counter() - t)
        return image

    pv.latent_to_image = timed_projection

    def fragments(_step, _total, image):
        t = time.perf_counter()
        block_fragments(image, rows=12)
        inside[-1] += time.perf_counter() - t

    variants = {
        "off": {},
        "on": {"on_preview": lambda *a: None, "preview_every": args.every},
        "on + blocks": {"on_preview": fragments, "preview_every": args.every},
    }
    for kw in variants.values():  # warm up
        gen.generate(request, **kw)
    times = {name: [] for name in variants}
    per_call = {name: [] for name in variants}
    names = list(variants)
    for r in range(args.rounds):
        for name in names[r % 3:] + names[:r % 3]:  # rotate the order each round
            inside.clear()
            t = time.perf_counter()
            gen.generate(request, **variants[name])
            times[name].append(time.perf_counter() - t)
            per_call[name] += inside
    print(f"demo model, {args.size}x{args.size}, {args.steps} steps, k_euler, preview_every {args.every}, "
          f"torch threads {torch.get_num_threads()}, {args.rounds} rounds interleaved")
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in times.items():
        inner = f", {statistics.median(per_call[k]) * 1e3:.2f} ms per preview" if per_call[k] else ""
        print(f"  previews {k:12} median {med[k]:.4f} s/image  (min {min(v):.4f}, max {max(v):.4f}){inner}")
    for k in names[1:]:
        share = sum(per_call[k]) / args.rounds / med["off"]
        print(f"  ratio {k} / off = {med[k] / med['off']:.3f}  (goal < 1.03); time inside the previews "
              f"{sum(per_call[k]) / args.rounds * 1e3:.1f} ms per image = {share:.1%} of an image")
    return 0


if __name__ == "__main__":
    sys.exit(main())
