#!/usr/bin/env python
"""GPU figures for an SD 1.5-shaped model in float16 at 512x512: UNet it/s and peak VRAM, dreamshell vs a
plain diffusers script; -n 4 with batching off (--batch_size 1) and on (--batch_size 4); --compile off
and on (the first, compiling, image timed apart). Run it where there is a GPU:

    python bench/bench_gpu.py --device cuda [--model FILE] [--steps 20] [--sections steps,fast]

Section fast (issue 17): the 1-step turbo image at 512x512 (k_euler_a, sgm_uniform, CFG 1), with the full VAE
and with a TAESD-shaped tiny decoder, -n 1 and -n 4 in one batch, dreamshell and plain diffusers interleaved
round by round: images per second.

Without --model it writes a random-weight SD 1.5 file (original layout, float16) into a temporary folder
with scripts/make_fullsize_checkpoints.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]
PROMPT = "a photograph of an astronaut riding a horse"


def timed(torch, fn) -> float:
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    t = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t


def plain_diffusers(torch, model: str, args) -> dict:
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
    pipe = StableDiffusionPipeline.from_single_file(model, config=str(ROOT / "dreamshell/configs/sd1"),
                                                    local_files_only=True, torch_dtype=torch.float16).to(args.device)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)

    def run():
        pipe(PROMPT, num_inference_steps=args.steps, guidance_scale=7.5, width=512, height=512,
             generator=torch.Generator("cpu").manual_seed(1))
    run()
    torch.cuda.reset_peak_memory_stats()
    seconds = timed(torch, run)
    result = {"it/s": args.steps / seconds, "peak VRAM GB": torch.cuda.max_memory_allocated() / 1e9}
    pipe.to("cpu")
    torch.cuda.empty_cache()
    return result


def dreamshell(torch, model: str, args, *, compile: bool = False, batch_size: int = 1, n: int = 1) -> dict:
    from dreamshell.engines.generator import DiffusersGenerator
    from dreamshell.weights.models import spec_for_path
    from dreamshell.line.parser import parse_request
    from dreamshell.run.resolve import resolve_request
    g = DiffusersGenerator(device=args.device, precision="float16", compile=compile, batch_size=batch_size)
    spec = spec_for_path(Path(model))
    g.load(spec)
    requests = [resolve_request(parse_request(f"{PROMPT} -S {1 + i} -s {args.steps} -W 512 -H 512 -C 7.5 -A k_euler"),
                                spec, []) for i in range(n)]
    first = timed(torch, lambda: g.generate_batch(requests))
    torch.cuda.reset_peak_memory_stats()
    seconds = timed(torch, lambda: g.generate_batch(requests))
    result = {"it/s": args.steps * n / seconds, "images/s": n / seconds, "first run s": first,
              "peak VRAM GB": torch.cuda.max_memory_allocated() / 1e9}
    g.unload()
    torch.cuda.empty_cache()
    return result


def fast_rows(torch, model: str, args) -> dict:
    """Images per second of the 1-step turbo image, dreamshell and plain diffusers interleaved (median of
    args.rounds rounds after a warm-up round)."""
    import statistics

    import diffusers
    from diffusers import AutoencoderTiny, StableDiffusionPipeline
    from bench_fast import make_taesd
    from dreamshell.engines.decoders import load_tiny_decoder
    from dreamshell.engines.generator import DiffusersGenerator
    from dreamshell.line.request import DreamRequest
    from dreamshell.line.samplers import plan
    from dreamshell.weights.library import LineFiles
    from dreamshell.weights.models import spec_for_path
    taesd = make_taesd(Path(tempfile.mkdtemp(prefix="bench-gpu-")) / "taesd.safetensors")
    dtype = getattr(args, "dtype", "float16")
    size = getattr(args, "size", 512)
    g = DiffusersGenerator(device=args.device, precision=dtype, batch_size=4)
    spec = spec_for_path(Path(model))
    g.load(spec)
    pipe = StableDiffusionPipeline.from_single_file(model, config=str(ROOT / "dreamshell/configs/sd1"),
                                                    local_files_only=True, torch_dtype=getattr(torch, dtype),
                                                    safety_checker=None, requires_safety_checker=False).to(args.device)
    pipe.set_progress_bar_config(disable=True)
    p = plan("k_euler_a", "sgm_uniform")
    pipe.scheduler = getattr(diffusers, p.scheduler).from_config(pipe.scheduler.config, **p.options)
    full_vae = pipe.vae
    tiny = AutoencoderTiny().eval()
    tiny.load_state_dict(load_tiny_decoder(taesd).state_dict(), strict=False)
    tiny = tiny.to(args.device, getattr(torch, dtype))
    rows: dict = {}
    for decoder, files, vae in (("TAESD", LineFiles(decoder=taesd), tiny), ("full VAE", LineFiles(), full_vae)):
        pipe.vae = vae
        for n in (1, 4):
            requests = [DreamRequest(PROMPT, steps=1, seed=1 + i, width=size, height=size, cfg_scale=1.0,
                                     sampler="k_euler_a", schedule="sgm_uniform", model=spec.name) for i in range(n)]

            def ours():
                return g.generate_batch(requests, files=files)

            def plain():
                with torch.inference_mode():
                    return pipe(PROMPT, num_inference_steps=1, guidance_scale=1.0, width=size, height=size,
                                num_images_per_prompt=n, generator=torch.Generator("cpu").manual_seed(1)).images
            times: dict = {"dreamshell": [], "plain diffusers": []}
            ours(), plain()
            for _ in range(args.rounds):
                for name, fn in (("dreamshell", ours), ("plain diffusers", plain)):
                    times[name].append(timed(torch, fn))
            for name, ts in times.items():
                rows[f"{name}, {decoder}, -n {n}"] = {"images/s": n / statistics.median(ts),
                                                      "best images/s": n / min(ts)}
            rows[f"dreamshell / plain, {decoder}, -n {n} (images/s)"] = {
                "ratio": statistics.median(times["plain diffusers"]) / statistics.median(times["dreamshell"])}
    g.unload()
    pipe.to("cpu")
    torch.cuda.empty_cache()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--model", default=None, help="an SD 1.5 single file (default: a random-weight one)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--sections", default="steps,fast", help="steps (20-step rows), fast (1-step images/s)")
    ap.add_argument("--rounds", type=int, default=10, help="section fast: timed rounds (the median is kept)")
    args = ap.parse_args()
    sections = set(args.sections.split(","))
    import torch
    if not args.device.startswith("cuda") or not torch.cuda.is_available():
        print(f"no CUDA device here (torch {torch.__version__}, torch.cuda.is_available() = "
              f"{torch.cuda.is_available()}): nothing to measure; run this on a machine with an NVIDIA GPU")
        return 2
    model = args.model
    if model is None:
        from dreamshell.engines.fullsize import write_checkpoint
        model = str(write_checkpoint("sd15", Path(tempfile.mkdtemp(prefix="bench-gpu-"))))
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, SD 1.5 shape, float16, 512x512")
    if "fast" in sections:
        print("1-step turbo image (k_euler_a, sgm_uniform, CFG 1), dreamshell and plain diffusers interleaved:")
        for name, r in fast_rows(torch, model, args).items():
            print(f"  {name:44} " + "  ".join(f"{k} {v:.3f}" for k, v in r.items()), flush=True)
    if "steps" not in sections:
        return 0
    print(f"{args.steps} steps, k_euler, CFG 7.5")
    rows = {"plain diffusers": plain_diffusers(torch, model, args),
            "dreamshell": dreamshell(torch, model, args),
            "dreamshell -n 4, --batch_size 1": dreamshell(torch, model, args, n=4, batch_size=1),
            "dreamshell -n 4, --batch_size 4": dreamshell(torch, model, args, n=4, batch_size=4),
            "dreamshell --compile": dreamshell(torch, model, args, compile=True)}
    for name, r in rows.items():
        print(f"  {name:32} " + "  ".join(f"{k} {v:.2f}" for k, v in r.items()))
    print(f"  dreamshell / plain it/s: {rows['dreamshell']['it/s'] / rows['plain diffusers']['it/s']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
