#!/usr/bin/env python
"""Full-size SD 1.5 on this CPU, side by side in one run, each contender in its own process (so its
peak memory is its own): seconds per UNet step and peak RSS for dreamshell vs a plain diffusers script
(same file, size, steps, sampler, CFG), float32 vs --precision auto and bfloat16, and the load time
and peak memory of the single file with accelerate (low_cpu_mem_usage) and without.

    python scripts/make_fullsize_checkpoints.py sd15          # writes /work/fullsize-models/sd15-random.safetensors
    python bench/bench_fullsize.py --model /work/fullsize-models/sd15-random.safetensors --steps 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
PROMPT = "a photograph of an astronaut riding a horse"


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB on Linux


def step_times(call) -> tuple[list[float], float]:
    """Run call(callback) and return the seconds between UNet steps (the first step included)."""
    marks = []

    def on_step(*_):
        marks.append(time.perf_counter())
    start = time.perf_counter()
    call(on_step)
    return [b - a for a, b in zip([start] + marks[:-1], marks)][1:], time.perf_counter() - start


def run_dreamshell(args) -> dict:
    sys.path.insert(0, str(ROOT))
    from dreamshell.engines.generator import DiffusersGenerator
    from dreamshell.weights.models import spec_for_path
    from dreamshell.line.parser import parse_request
    from dreamshell.run.resolve import resolve_request
    t = time.perf_counter()
    g = DiffusersGenerator(device="cpu", precision=args.precision)
    spec = spec_for_path(Path(args.model))
    g.load(spec)
    load_s = time.perf_counter() - t
    request = resolve_request(parse_request(f"{PROMPT} -S 1 -s {args.steps} -W {args.size} -H {args.size} "
                                            f"-C 7.5 -A k_euler"), spec, [])
    images = []
    steps, total = step_times(lambda cb: images.append(g.generate(request, on_step=cb)))
    saved = f"/tmp/bench-fullsize-dreamshell-{args.precision}.png"
    images[0].save(saved)
    return {"load_s": load_s, "steps": steps, "image_s": total, "precision": g.precision, "image": saved,
            "unet": str(g._pipes["txt2img"].unet.dtype), "vae": str(g._pipes["txt2img"].vae.dtype)}


def run_plain(args) -> dict:
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
    t = time.perf_counter()
    pipe = StableDiffusionPipeline.from_single_file(args.model, config=str(ROOT / "dreamshell/configs/sd1"),
                                                    local_files_only=True, torch_dtype=torch.float32)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    load_s = time.perf_counter() - t

    def call(cb):
        def end(p, i, t, kw):
            cb()
            return kw
        pipe(PROMPT, num_inference_steps=args.steps, guidance_scale=7.5, width=args.size, height=args.size,
             generator=torch.Generator("cpu").manual_seed(1), callback_on_step_end=end)
    steps, total = step_times(call)
    return {"load_s": load_s, "steps": steps, "image_s": total, "precision": "float32"}


def run_load(args) -> dict:
    """Load the single file only, as dreamshell does, with accelerate and as if it were not installed
    (diffusers then builds each model with random weights first and copies the file's in)."""
    import torch
    if args.accelerate == "off":
        import diffusers.utils.import_utils as import_utils
        import_utils._accelerate_available = False  # before diffusers' loaders import and ask
    from diffusers import StableDiffusionPipeline
    t = time.perf_counter()
    StableDiffusionPipeline.from_single_file(args.model, config=str(ROOT / "dreamshell/configs/sd1"),
                                             local_files_only=True, torch_dtype=torch.float32)
    return {"load_s": time.perf_counter() - t}


def child(args) -> int:
    import torch
    result = {"dreamshell": run_dreamshell, "plain": run_plain, "load": run_load}[args.role](args)
    result.update(peak_rss_gb=peak_rss_gb(), threads=torch.get_num_threads())
    print(json.dumps(result))
    return 0


def contender(args, role: str, **extra) -> dict:
    cmd = [sys.executable, __file__, "--role", role, "--model", args.model, "--steps", str(extra.get("steps", args.steps)),
           "--size", str(args.size), "--precision", extra.get("precision", "float32"),
           "--accelerate", extra.get("accelerate", "on")]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if run.returncode:
        return {"error": run.stderr.strip().splitlines()[-1] if run.stderr.strip() else f"exit {run.returncode}"}
    return json.loads(run.stdout.strip().splitlines()[-1])


def image_difference(a: str, b: str) -> str:
    import numpy as np
    from PIL import Image
    d = np.abs(np.asarray(Image.open(a), float) - np.asarray(Image.open(b), float))
    return f"mean |diff| {d.mean():.2f}/255, max {d.max():.0f}, identical {bool(d.max() == 0)}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="/work/fullsize-models/sd15-random.safetensors")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--role", choices=("dreamshell", "plain", "load"), help=argparse.SUPPRESS)
    ap.add_argument("--precision", default="float32", help=argparse.SUPPRESS)
    ap.add_argument("--accelerate", default="on", help=argparse.SUPPRESS)
    ap.add_argument("--skip", default="", help="comma list of parts to skip: load,speed,precision")
    args = ap.parse_args()
    if args.role:
        return child(args)
    skip = set(filter(None, args.skip.split(",")))
    flags = Path("/proc/cpuinfo").read_text().split("flags", 2)[1].splitlines()[0] if Path("/proc/cpuinfo").exists() else ""
    print(f"model {args.model}, {args.size}x{args.size}, {args.steps} steps, k_euler, CFG 7.5 (UNet batch 2); "
          f"CPU: {os.cpu_count()} logical, native bf16: {'avx512_bf16' in flags or 'amx_bf16' in flags}")
    rows = {}
    if "load" not in skip:
        for acc in ("on", "off"):
            rows[f"load, accelerate {acc}"] = contender(args, "load", accelerate=acc)
    if "speed" not in skip:
        rows["plain diffusers float32"] = contender(args, "plain")
        rows["dreamshell float32"] = contender(args, "dreamshell")
    if "precision" not in skip:
        rows["dreamshell auto"] = contender(args, "dreamshell", precision="auto")
        rows["dreamshell bfloat16"] = contender(args, "dreamshell", precision="bfloat16")
    for name, r in rows.items():
        if "error" in r:
            print(f"  {name:26} failed: {r['error']}")
            continue
        step = f"{statistics.median(r['steps']):7.2f} s/step (steps {', '.join(f'{s:.2f}' for s in r['steps'])})" \
            if r.get("steps") else ""
        print(f"  {name:26} load {r['load_s']:6.1f} s  peak RSS {r['peak_rss_gb']:5.2f} GB  {step}"
              + (f"  [{r['precision']}: unet {r.get('unet', '')}, vae {r.get('vae', '')}]" if "unet" in r else ""))
    med = {k: statistics.median(r["steps"]) for k, r in rows.items() if r.get("steps")}
    if "dreamshell float32" in med and "plain diffusers float32" in med:
        print(f"  dreamshell / plain, s/step: {med['dreamshell float32'] / med['plain diffusers float32']:.3f} (goal <= 1.02)")
    for name in ("dreamshell auto", "dreamshell bfloat16"):
        if name in med and "dreamshell float32" in med:
            print(f"  float32 / {name.split()[1]} speed-up: {med['dreamshell float32'] / med[name]:.2f}x (goal >= 1.8); "
                  f"image vs float32: {image_difference(rows['dreamshell float32']['image'], rows[name]['image'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
