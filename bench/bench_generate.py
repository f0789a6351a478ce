#!/usr/bin/env python
"""Seconds per image: dreamshell (parse, resolve, generate, PNG with 3 chunks, log line) vs a plain
diffusers script (pipeline call + PIL save) on the same model and settings, interleaved in one run.

    python bench/bench_generate.py [--model DIR] [--rounds 5] [--steps 20]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="diffusers folder (default: the built-in demo model)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()

    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    from dreamshell.engines.generator import DiffusersGenerator
    try:   # the stage layout (0.2.0); the flat one before it, so the same script measures both
        from dreamshell.run.dispatch import Dispatcher
        from dreamshell.run.model_host import ModelHost
        from dreamshell.run.session import Session
        from dreamshell.weights.models import Registry, demo_spec, spec_for_path
    except ImportError:
        from dreamshell.dispatch import Dispatcher
        from dreamshell.model_host import ModelHost
        from dreamshell.models import Registry, demo_spec, spec_for_path
        from dreamshell.session import Session

    spec = demo_spec() if args.model is None else spec_for_path(Path(args.model))
    out = Path(tempfile.mkdtemp(prefix="bench-"))
    generator = DiffusersGenerator(device="cpu", precision="float32")
    session = Session(Registry({spec.name: spec}), ModelHost(lambda: generator), out / "dreamshell")
    dispatcher = Dispatcher(session, lambda _: None)

    plain = StableDiffusionPipeline.from_pretrained(str(spec.weights), local_files_only=True, torch_dtype=torch.float32,
                                                    safety_checker=None, requires_safety_checker=False)
    plain.scheduler = EulerDiscreteScheduler.from_config(plain.scheduler.config)
    plain.set_progress_bar_config(disable=True)
    (out / "plain").mkdir()
    prompt = "a red circle on a blue background"
    w, h = spec.width, spec.height

    def run_dreamshell(i):   # the whole line: parse, plan, generate, PNG with three chunks, log line
        outcome = dispatcher.execute(f"{prompt} -S {i} -s {args.steps} -C 5 -A k_euler -W {w} -H {h}")
        assert not outcome.failed

    def run_plain(i):
        g = torch.Generator("cpu").manual_seed(i)
        img = plain(prompt, num_inference_steps=args.steps, guidance_scale=5.0, generator=g, width=w,
                    height=h).images[0]
        img.save(out / "plain" / f"{i}.png")

    for fn in (run_dreamshell, run_plain):  # warm up both
        fn(0)
    times = {"dreamshell": [], "plain diffusers": []}
    for r in range(args.rounds):
        for name, fn in (("dreamshell", run_dreamshell), ("plain diffusers", run_plain)) if r % 2 == 0 else \
                (("plain diffusers", run_plain), ("dreamshell", run_dreamshell)):
            t = time.perf_counter()
            fn(r + 1)
            times[name].append(time.perf_counter() - t)
    print(f"model {spec.weights}, {w}x{h}, {args.steps} steps, k_euler, torch threads {torch.get_num_threads()}, "
          f"{args.rounds} rounds interleaved")
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in times.items():
        print(f"  {k:16} median {med[k]:.3f} s/image  (min {min(v):.3f}, max {max(v):.3f})")
    print(f"  ratio dreamshell / plain = {med['dreamshell'] / med['plain diffusers']:.3f}  (goal <= 1.02)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
