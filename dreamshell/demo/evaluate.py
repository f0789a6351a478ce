"""Measure how well a model follows shape prompts, through dreamshell's own generator.

    python -m dreamshell.demo.evaluate                # full grid, 2 seeds, the built-in demo model
    python -m dreamshell.demo.evaluate --small        # a few dozen images
(the test suite runs a smoke test of a handful: tests/test_demo_model.py)

Colour: the commonest non-background colour is the asked one. Background: the commonest colour
on the border is the asked one. Shape: the fill ratio of the colour's bounding box (square ~1,
circle ~0.79, triangle ~0.5). img2img at -f 0.3 keeps the init image's colours; inpainting a
masked square with "a yellow circle" makes it yellow and leaves the rest close to the original.
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from . import shapes


@dataclass
class Scores:
    colour: float
    shape: float
    background: float
    img2img_keeps: float
    img2img_keeps_other_prompt: float
    inpaint_yellow: float
    inpaint_outside_error: float
    images: int
    seconds: float

    def table(self) -> str:
        rows = [("colour adherence", f"{self.colour:.1%}", ">= 90%"),
                ("shape adherence", f"{self.shape:.1%}", ">= 80%"),
                ("background adherence", f"{self.background:.1%}", ">= 90%"),
                ("img2img -f 0.3 keeps colours", f"{self.img2img_keeps:.1%}", "high"),
                ("  ... with another scene's prompt", f"{self.img2img_keeps_other_prompt:.1%}", "(reported)"),
                ("inpaint: masked square yellow", f"{self.inpaint_yellow:.1%}", "high"),
                ("inpaint: mean error outside mask", f"{self.inpaint_outside_error:.1f}/255", "small")]
        w = max(len(r[0]) for r in rows)
        out = [f"{'measure':{w}}  {'value':>8}  goal", "-" * (w + 20)]
        out += [f"{a:{w}}  {b:>8}  {c}" for a, b, c in rows]
        out.append(f"{self.images} images in {self.seconds:.0f} s")
        return "\n".join(out)


def grid(small: bool, prompts: int | None = None) -> list[tuple[str, str, str]]:
    """(colour, shape, background) triples: all 90, or a spread-out sample of 24 (or of `prompts`)."""
    full = [(c, s, b) for c, s, b in itertools.product(shapes.COLOURS, shapes.SHAPES, shapes.COLOURS) if c != b]
    if prompts is None and not small:
        return full
    return random.Random(0).sample(full, prompts or 24)


def evaluate(generator, spec, small: bool = False, seeds: int = 2, steps: int | None = None,
             cfg: float | None = None, sampler: str | None = None, prompts: int | None = None,
             img2img: int | None = None, inpaint: int | None = None, line: str = "", first_seed: int = 0) -> Scores:
    """All seven figures; `prompts`, `img2img` and `inpaint` shrink the three parts (the smoke test).
    `line`: more of a dream> line put after each prompt (`<lora:demo_lcm:1> --preset lcm`)."""
    from ..line.parser import parse_request
    from ..line.presets import apply_preset
    from ..run.resolve import resolve_request

    t0 = time.perf_counter()
    hits = {"colour": 0, "shape": 0, "background": 0}
    n = 0

    more = line.strip()

    def request(text: str):
        extra = (f" -s {steps}" if steps else "") + (f" -C {cfg}" if cfg is not None else "") + \
            (f" -A {sampler}" if sampler else "") + (f" {more}" if more else "")
        return resolve_request(apply_preset(parse_request(text + extra)), spec, [])

    for (colour, shape, background), seed in itertools.product(grid(small, prompts),
                                                              range(first_seed, first_seed + seeds)):
        img = generator.generate(request(f"a {colour} {shape} on a {background} background -S {seed}"))
        r = shapes.read_image(img)
        hits["colour"] += r.colour == colour
        hits["shape"] += r.shape == shape
        hits["background"] += r.background == background
        n += 1

    # img2img at low strength keeps the init image's colours: with the init's own caption (refining
    # an image) and, reported beside it, with another scene's caption pulling away from it
    keeps = keeps_other = tries = 0
    rng = random.Random(1)
    from ..line.errors import LimitError
    from ..line.limits import check_denoised_steps
    try:   # at -s 1 or 2, -f 0.3 runs no step: the part is left out (nan)
        check_denoised_steps(request("x -S 0 -I init.png -f 0.3"))
        cases_img2img = img2img if img2img is not None else 6 if small else 20
    except LimitError:
        cases_img2img = 0
    for i in range(cases_img2img):
        scene = shapes.random_scene(rng)
        init = shapes.render(scene, rng)
        other = shapes.random_scene(rng)
        for caption, counter in ((scene.caption(), "same"), (other.caption(), "other")):
            img = generator.generate(request(f"{caption} -S {i} -I init.png -f 0.3"), init_image=init)
            r = shapes.read_image(img)
            kept = r.background == scene.background and r.colour == scene.colour
            if counter == "same":
                keeps += kept
            else:
                keeps_other += kept
        tries += 1

    # inpainting a masked square with a yellow circle
    yellow = outside = 0.0
    cases = inpaint if inpaint is not None else 4 if small else 12
    for i in range(cases):
        bg = ["blue", "black", "green", "red"][i % 4]
        init = Image.new("RGB", (64, 64), shapes.COLOURS[bg])
        mask = Image.new("L", (64, 64), 0)
        mask.paste(255, (16, 16, 48, 48))
        img = generator.generate(request(f"a yellow circle on a {bg} background -S {i} -I init.png -f 1"),
                                 init_image=init, mask=mask)
        labels = shapes.classify_pixels(img)
        inside = labels[16:48, 16:48]
        yellow_index = list(shapes.COLOURS).index("yellow")
        yellow += float((inside == yellow_index).mean() > 0.25)
        m = np.asarray(mask) < 128
        diff = np.abs(np.asarray(img, np.float32) - np.asarray(init, np.float32)).mean(-1)
        outside += float(diff[m].mean())
    nan = float("nan")   # a part asked to run 0 cases
    return Scores(hits["colour"] / n, hits["shape"] / n, hits["background"] / n, keeps / tries if tries else nan,
                  keeps_other / tries if tries else nan, yellow / cases if cases else nan,
                  outside / cases if cases else nan, n + 2 * tries + cases,
                  time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="a diffusers folder (default: the built-in demo model)")
    ap.add_argument("--small", action="store_true", help="24 prompts instead of 90")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--cfg", type=float, default=None)
    ap.add_argument("--sampler", default=None)
    ap.add_argument("--line", default="", help="more of a dream> line after each prompt, e.g. "
                    "\"<lora:demo_lcm:1> --preset lcm -s 4\"")
    args = ap.parse_args(argv)

    from ..engines.generator import DiffusersGenerator
    from ..weights.models import demo_spec, spec_for_path

    spec = demo_spec() if args.model is None else spec_for_path(Path(args.model))
    if args.model is not None:
        d = demo_spec()
        spec = spec.__class__(**{**spec.__dict__, "width": d.width, "height": d.height, "steps": d.steps,
                                 "cfg_scale": d.cfg_scale, "sampler": d.sampler})
    generator = DiffusersGenerator(device="cpu")
    generator.load(spec)
    scores = evaluate(generator, spec, small=args.small, seeds=args.seeds, steps=args.steps, cfg=args.cfg,
                      sampler=args.sampler, line=args.line)
    print(f"model {spec.weights} steps {args.steps or spec.steps} cfg {args.cfg or spec.cfg_scale} "
          f"sampler {args.sampler or spec.sampler}" + (f" line '{args.line}'" if args.line else ""))
    print(scores.table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
