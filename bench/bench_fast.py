#!/usr/bin/env python
"""Issue 17: what is fast on a CPU, side by side in one run, on the random-weight full-size SD 1.5 file at
512x512 (and the demo model where it says so). Run it alone on the machine:

    python scripts/make_fullsize_checkpoints.py --out DIR sd15             # DIR/sd15-random.safetensors
    /work/tools/quiet python bench/bench_fast.py --model DIR/sd15-random.safetensors \\
        --sdcpp_python /path/to/venv-with-stable-diffusion-cpp-python/bin/python --json out.json

Sections (--sections, default all):
- peak:    the machine's float32 ceiling: a 2048 and a 4096 square matrix product in torch (best of 5).
- flops:   FLOPs of one UNet call, the full VAE decode and the TAESD decode (torch's FlopCounterMode).
- layout:  channels_last against contiguous for the UNet call and the VAE decode, on the full-size file and on
           the demo model, interleaved (best of --reps each).
- images:  the issue's rows through dreamshell's generator (its defaults) and through a plain diffusers script
           (from_single_file, as its docs write it; TAESD as `pipe.vae = AutoencoderTiny`): 20 steps k_euler
           CFG 7.5, LCM 4 steps CFG 1, 1-step turbo (k_euler_a, trailing) CFG 1; each with the full VAE and
           with TAESD. A 20-step row runs once, with the full VAE; its TAESD figure is its sampling time plus
           the TAESD decode measured in the same run (marked "sampling + decode").
- oneimage: the 1-step turbo image (k_euler_a, trailing, CFG 1; --oneimage_rows picks other rows: LCM) with TAESD
           and with the full VAE, dreamshell and plain diffusers interleaved image by image (--reps rounds; best and
           median), and where each one's time goes (text encoder, UNet call, decode), timed inside the same images.
- sdxl:    an SDXL-size 1-step image at 1024x1024 (k_euler_a, trailing, CFG 1) through dreamshell with a TAESD-shaped
           tiny decoder named taesdxl_decoder, on --sdxl_model (scripts/make_fullsize_checkpoints.py sdxl); the UNet
           call timed inside it.
- bf16vae: the full VAE's decode in bfloat16 against float32 on the full-size file (random latents) and on the
           demo model (its own latents from 20-step images): PSNR and the largest pixel difference, and speed.
- compile: torch.compile of the UNet after warm-up against eager (the demo model; --compile_full for the
           full-size file too: many minutes of compiling on two cores).
- sdcpp:   stable-diffusion.cpp (stable-diffusion-cpp-python, in its own interpreter: --sdcpp_python) on the same
           file, steps and CFG, f32 weights, 2 threads, its default and its conv-direct + flash-attention modes.
Every time has its achieved TFLOP/s beside it (UNet calls x the UNet's FLOPs + the decode's; the text
encoder's 2 x 0.7 GFLOP are left out).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PROMPT = "a photograph of an astronaut riding a horse"
SIZE = 512

# (name, steps, sampler, schedule, cfg); sd.cpp's sampler and scheduler for the same row
ROWS = (("20 steps k_euler CFG 7.5", 20, "k_euler", None, 7.5, ("euler", "discrete")),
        ("LCM 4 steps CFG 1", 4, "LCM", None, 1.0, ("lcm", "discrete")),
        ("1-step turbo CFG 1", 1, "k_euler_a", "sgm_uniform", 1.0, ("euler_a", "sgm_uniform")))


def out(text: str) -> None:
    print(text, flush=True)


def best_of(fn, reps: int, warm: int = 1) -> float:
    for _ in range(warm):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def flops_of(fn) -> float:
    """FLOPs of `fn` (2 a multiply-add). Attention through SDPA's math path: the CPU's fused kernel is not one
    FlopCounterMode counts (before 2026-12-04 the UNet's attention, 0.126 of its 0.803 TFLOP at 512, was missed)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as mode, sdpa_kernel(SDPBackend.MATH):
        fn()
    return float(mode.get_total_flops())


def tflops(flop: float, seconds: float) -> str:
    return f"{flop / seconds / 1e12:.3f}" if seconds else "-"


def make_taesd(path: Path) -> Path:
    """A random-weight AutoencoderTiny's decoder in diffusers' single-file layout (the shape of madebyollin's
    TAESD: timing only; stable-diffusion.cpp reads this layout too)."""
    if path.exists():
        return path
    import torch
    from diffusers import AutoencoderTiny
    from safetensors.torch import save_file
    torch.manual_seed(0)
    tiny = AutoencoderTiny()
    save_file({k: v.contiguous() for k, v in tiny.state_dict().items()}, str(path))
    return path


# ----- the pieces


def sd15_pipe(model: Path):
    import diffusers
    import torch
    pipe = diffusers.StableDiffusionPipeline.from_single_file(
        str(model), config=str(ROOT / "dreamshell" / "configs" / "sd1"), local_files_only=True,
        torch_dtype=torch.float32, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def demo_pipe():
    import diffusers
    import torch
    from dreamshell.weights.models import demo_spec
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(str(demo_spec().weights), local_files_only=True,
                                                             torch_dtype=torch.float32, safety_checker=None,
                                                             requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def unet_inputs(pipe, size: int):
    import torch
    g = torch.Generator().manual_seed(0)
    factor = pipe.vae_scale_factor
    lat = torch.randn(1, pipe.unet.config.in_channels, size // factor, size // factor, generator=g)
    emb = torch.randn(1, 77, pipe.text_encoder.config.hidden_size, generator=g)
    return lat, torch.tensor([999]), emb


def section_peak(results: dict) -> None:
    """The float32 ceiling the TFLOP/s figures compare with: torch's matrix product on square inputs."""
    import torch
    peak = {}
    for n in (2048, 4096):
        a, b = torch.randn(n, n), torch.randn(n, n)
        seconds = best_of(lambda: a @ b, 5)
        peak[n] = 2 * n ** 3 / seconds / 1e12
        out(f"peak: float32 matmul {n}x{n}: {peak[n]:.4f} TFLOP/s")
    results["peak_tflop_s"] = peak


def section_flops(model: Path, taesd: Path, results: dict) -> None:
    import torch
    from dreamshell.engines.decoders import load_tiny_decoder
    pipe = sd15_pipe(model)
    lat, t, emb = unet_inputs(pipe, SIZE)
    tiny = load_tiny_decoder(taesd)
    with torch.no_grad():
        f = {"unet": flops_of(lambda: pipe.unet(lat, t, emb)),
             "vae_decode": flops_of(lambda: pipe.vae.decode(lat / 0.18215)),
             "taesd_decode": flops_of(lambda: tiny.decode(lat))}
    demo = demo_pipe()
    size = demo.unet.config.sample_size * demo.vae_scale_factor
    dl, dt, de = unet_inputs(demo, size)
    with torch.no_grad():
        f["demo_unet"] = flops_of(lambda: demo.unet(dl, dt, de))
        f["demo_vae_decode"] = flops_of(lambda: demo.vae.decode(dl / demo.vae.config.scaling_factor))
    results["flops"] = f
    out("FLOPs: " + ", ".join(f"{k} {v / 1e12:.4f} T" for k, v in f.items()))


def section_layout(model: Path, taesd: Path, reps: int, results: dict) -> None:
    """channels_last against contiguous, interleaved, on both models (and the TAESD decode at 512)."""
    import torch
    from dreamshell.engines.decoders import load_tiny_decoder
    tiny = load_tiny_decoder(taesd)
    rows = {}
    for name, pipe, size, r in (("full-size SD 1.5 at 512", sd15_pipe(model), SIZE, reps),
                                ("demo at 64", demo_pipe(), 64, reps * 10)):
        lat, t, emb = unet_inputs(pipe, size)
        scaled = lat / pipe.vae.config.scaling_factor
        best = {}
        parts = [("unet", lambda: pipe.unet(lat, t, emb)), ("vae_decode", lambda: pipe.vae.decode(scaled))]
        if size == SIZE:
            parts.append(("taesd_decode", lambda: tiny.decode(lat)))
        with torch.no_grad():
            for _round in range(r):
                for cl in (False, True):
                    fmt = torch.channels_last if cl else torch.contiguous_format
                    pipe.unet.to(memory_format=fmt)
                    pipe.vae.to(memory_format=fmt)
                    tiny.to(memory_format=fmt)
                    for part, fn in parts:
                        key = (part, cl)
                        s = best_of(fn, 1, warm=1 if _round == 0 else 0)
                        best[key] = min(best.get(key, s), s)
        for part, _ in parts:
            rows[f"{name}: {part}"] = {"contiguous_s": best[(part, False)], "channels_last_s": best[(part, True)],
                                       "speedup": best[(part, False)] / best[(part, True)]}
            out(f"layout {name} {part}: contiguous {best[(part, False)]:.3f}s, channels_last "
                f"{best[(part, True)]:.3f}s ({best[(part, False)] / best[(part, True)]:.2f}x)")
        del pipe
    results["layout"] = rows


def _dreamshell(model: Path, precision: str = "float32"):
    from dreamshell.engines.generator import DiffusersGenerator
    from dreamshell.weights.models import spec_for_path
    gen = DiffusersGenerator(device="cpu", precision=precision)
    spec = spec_for_path(model)
    gen.load(spec)
    return gen, spec


def timed_image(call) -> tuple[float, float]:
    """(total seconds, seconds to the last denoising step) of call(on_step)."""
    marks = []
    t = time.perf_counter()
    call(lambda *a: marks.append(time.perf_counter()))
    end = time.perf_counter()
    return end - t, (marks[-1] - t) if marks else 0.0


def section_images(model: Path, taesd: Path, reps: int, results: dict, skip20: bool, bf16: bool = False) -> None:
    import diffusers
    import torch
    from dreamshell.engines.decoders import load_tiny_decoder
    from dreamshell.line.request import DreamRequest
    from dreamshell.line.samplers import plan
    from dreamshell.weights.library import LineFiles
    f = results.get("flops") or {}
    rows = results.setdefault("images", {})

    def record(runner, row, decoder, seconds, calls, how=""):
        flop = calls * f.get("unet", 0) + f.get("vae_decode" if decoder == "full VAE" else "taesd_decode", 0)
        rows[f"{runner} | {row} | {decoder}"] = {"s": seconds, "unet_calls": calls, "tflop": flop / 1e12,
                                                 "tflop_s": flop / seconds / 1e12 if seconds and flop else None,
                                                 "how": how}
        out(f"image {runner} | {row} | {decoder}: {seconds:.2f}s ({tflops(flop, seconds)} TFLOP/s) {how}")

    tiny = load_tiny_decoder(taesd)
    lat = torch.randn(1, 4, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(0))
    taesd_decode = best_of(lambda: tiny.decode(lat), reps)
    results["taesd_decode_s"] = taesd_decode
    # dreamshell, its defaults; with bf16 also at --precision bfloat16 (its few-step rows once: on a CPU without
    # native bf16 each UNet call is several times float32's, and the VAE stays float32 there)
    for runner, precision in (("dreamshell", "float32"),) + ((("dreamshell bf16", "bfloat16"),) if bf16 else ()):
        gen, spec = _dreamshell(model, precision)
        for name, steps, sampler, schedule, cfg, _ in ROWS:
            calls = steps * (2 if cfg > 1 else 1)
            for decoder, files in (("full VAE", LineFiles()), ("TAESD", LineFiles(decoder=taesd))):
                request = DreamRequest(PROMPT, steps=steps, seed=1, width=SIZE, height=SIZE, cfg_scale=cfg,
                                       sampler=sampler, schedule=schedule, model=spec.name)
                if steps >= 20:
                    if skip20 or precision != "float32":
                        continue
                    if decoder == "TAESD":
                        sampling = rows[f"{runner} | {name} | full VAE"]["sampling_s"]
                        record(runner, name, decoder, sampling + taesd_decode, calls, "(sampling + decode)")
                        continue
                    total, sampling = timed_image(lambda cb: gen.generate(request, files=files, on_step=cb))
                    record(runner, name, decoder, total, calls)
                    rows[f"{runner} | {name} | full VAE"]["sampling_s"] = sampling
                    continue
                seconds = best_of(lambda: gen.generate(request, files=files), reps if precision == "float32" else 1,
                                  warm=1 if precision == "float32" else 0)
                record(runner, name, decoder, seconds, calls, "" if precision == "float32" else
                       f"(UNet bf16, VAE {'bf16' if not gen.vae_float32 else 'float32'}; one run)")
        del gen

    # plain diffusers, as its docs write it
    pipe = sd15_pipe(model)
    vae = pipe.vae
    from diffusers import AutoencoderTiny
    plain_tiny = AutoencoderTiny().eval()
    plain_tiny.load_state_dict({k: v for k, v in tiny.state_dict().items()}, strict=False)
    for name, steps, sampler, schedule, cfg, _ in ROWS:
        p = plan(sampler, schedule)
        pipe.scheduler = getattr(diffusers, p.scheduler).from_config(pipe.scheduler.config, **p.options)
        calls = steps * (2 if cfg > 1 else 1)
        for decoder in ("full VAE", "TAESD"):
            pipe.vae = vae if decoder == "full VAE" else plain_tiny

            def call(cb=None):
                return pipe(PROMPT, num_inference_steps=steps, guidance_scale=cfg, height=SIZE, width=SIZE,
                            generator=torch.Generator().manual_seed(1),
                            callback_on_step_end=(lambda p_, i, t_, kw: (cb(), kw)[1]) if cb else None).images
            if steps >= 20:
                if skip20:
                    continue
                if decoder == "TAESD":
                    sampling = rows[f"diffusers | {name} | full VAE"]["sampling_s"]
                    record("diffusers", name, decoder, sampling + taesd_decode, calls, "(sampling + decode)")
                    continue
                total, sampling = timed_image(call)
                record("diffusers", name, decoder, total, calls)
                rows[f"diffusers | {name} | full VAE"]["sampling_s"] = sampling
                continue
            with torch.inference_mode():
                seconds = best_of(call, reps)
            record("diffusers", name, decoder, seconds, calls)
    pipe.vae = vae


def section_oneimage(model: Path, taesd: Path, reps: int, results: dict, row: str = "1-step") -> None:
    """One row's image (the 1-step one unless `row` names another by its start), dreamshell and plain diffusers
    interleaved image by image, with its parts."""
    import statistics

    import diffusers
    import torch
    from diffusers import AutoencoderTiny
    from dreamshell.engines import decoders
    from dreamshell.line.request import DreamRequest
    from dreamshell.line.samplers import plan
    from dreamshell.weights.library import LineFiles
    f = results.get("flops") or {}
    parts: dict = {}

    def timed(obj, name, label):
        inner = getattr(obj, name)

        def wrapper(*a, **k):
            t = time.perf_counter()
            value = inner(*a, **k)
            parts.setdefault(label, []).append(time.perf_counter() - t)
            return value
        setattr(obj, name, wrapper)

    gen, spec = _dreamshell(model)
    pipe = sd15_pipe(model)
    full_vae = pipe.vae
    tiny = decoders.load_tiny_decoder(taesd)
    plain_tiny = AutoencoderTiny().eval()
    plain_tiny.load_state_dict(tiny.state_dict(), strict=False)
    name, steps, sampler, schedule, cfg, _ = next(r for r in ROWS if r[0].startswith(row))
    calls = steps * (2 if cfg > 1 else 1)
    p = plan(sampler, schedule)
    pipe.scheduler = getattr(diffusers, p.scheduler).from_config(pipe.scheduler.config, **p.options)
    timed(gen.text, "conditioning", "dreamshell text")
    timed(gen._pipes["txt2img"].unet, "forward", "dreamshell UNet")
    timed(decoders, "decode", "dreamshell TAESD decode")
    timed(pipe, "encode_prompt", "diffusers text")
    timed(pipe.unet, "forward", "diffusers UNet")
    timed(plain_tiny, "decode", "diffusers TAESD decode")
    request = DreamRequest(PROMPT, steps=steps, seed=1, width=SIZE, height=SIZE, cfg_scale=cfg, sampler=sampler,
                           schedule=schedule, model=spec.name)
    rows = results.setdefault("oneimage" if row == "1-step" else f"oneimage {name}", {})
    for decoder, files, vae in (("TAESD", LineFiles(decoder=taesd), plain_tiny), ("full VAE", LineFiles(), full_vae)):
        pipe.vae = vae

        def diffusers_image():
            with torch.inference_mode():
                return pipe(PROMPT, num_inference_steps=steps, guidance_scale=cfg, height=SIZE, width=SIZE,
                            generator=torch.Generator().manual_seed(1)).images
        times: dict = {"dreamshell": [], "diffusers": []}
        gen.generate(request, files=files)     # warm-up, both
        diffusers_image()
        for _ in range(reps):
            for runner, call in (("dreamshell", lambda: gen.generate(request, files=files)),
                                 ("diffusers", diffusers_image)):
                t = time.perf_counter()
                call()
                times[runner].append(time.perf_counter() - t)
        flop = calls * f.get("unet", 0) + f.get("vae_decode" if decoder == "full VAE" else "taesd_decode", 0)
        for runner, ts in times.items():
            best = min(ts)
            rows[f"{runner} | {decoder}"] = {"best_s": best, "median_s": statistics.median(ts), "all_s": ts,
                                             "tflop_s": flop / best / 1e12 if flop else None}
            out(f"one image {runner} | {name} | {decoder}: best {best:.2f}s median {statistics.median(ts):.2f}s "
                f"({tflops(flop, best)} TFLOP/s) all {[round(t, 2) for t in ts]}")
        ratio = min(times["dreamshell"]) / min(times["diffusers"])
        rows[f"ratio | {decoder}"] = ratio
        out(f"one image {name}, {decoder}: dreamshell / diffusers = {ratio:.3f} (best), "
            f"{statistics.median(times['dreamshell']) / statistics.median(times['diffusers']):.3f} (median)")
    results["oneimage_parts" if row == "1-step" else f"oneimage_parts {name}"] = {k: {"median_s": statistics.median(v), "n": len(v)} for k, v in parts.items()}
    for k, v in parts.items():
        out(f"  part {k}: median {statistics.median(v):.3f}s over {len(v)}")
    pipe.vae = full_vae


def section_sdxl(model: Path, reps: int, results: dict) -> None:
    """An SDXL-size 1-step image at 1024 through dreamshell, TAESD decoder, with its UNet call timed inside."""
    import torch
    from dreamshell.line.request import DreamRequest
    from dreamshell.weights.library import LineFiles
    taesd = model.with_name("taesdxl_decoder.safetensors")   # the name says SDXL: a random TAESD-shaped decoder
    if not taesd.exists():
        from diffusers import AutoencoderTiny
        from safetensors.torch import save_file
        torch.manual_seed(0)
        save_file({k: v.contiguous() for k, v in AutoencoderTiny().state_dict().items() if k.startswith("decoder.")},
                  str(taesd))
    gen, spec = _dreamshell(model)
    unet = gen._pipes["txt2img"].unet
    calls: list = []
    inner = unet.forward

    def timed(*a, **k):
        t = time.perf_counter()
        value = inner(*a, **k)
        calls.append(time.perf_counter() - t)
        return value
    unet.forward = timed
    from dreamshell.engines import decoders
    parts: dict = {"text": [], "decode": []}

    def timing(name, fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            value = fn(*a, **k)
            parts[name].append(time.perf_counter() - t)
            return value
        return wrapper
    conditioning, decode_to_pil = gen.text.conditioning, decoders.decode_to_pil
    gen.text.conditioning = timing("text", conditioning)
    decoders.decode_to_pil = timing("decode", decode_to_pil)
    request = DreamRequest(PROMPT, steps=1, seed=1, width=1024, height=1024, cfg_scale=1.0, sampler="k_euler_a",
                           schedule="sgm_uniform", model=spec.name)
    times = []
    try:
        for _ in range(reps):
            t = time.perf_counter()
            gen.generate(request, files=LineFiles(decoder=taesd))
            times.append(time.perf_counter() - t)
    finally:
        decoders.decode_to_pil = decode_to_pil
    # FLOPs: the UNet's by its shapes on the meta device; TAESD's scale with the pixels (0.1414 T at 512)
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode
    with torch.device("meta"):
        shape = UNet2DConditionModel.from_config(unet.config)
        added = {"text_embeds": torch.randn(1, 1280), "time_ids": torch.randn(1, 6)}
        with FlopCounterMode(display=False) as counter:
            shape(torch.randn(1, 4, 128, 128), torch.tensor([999.0]), torch.randn(1, 77, 2048),
                  added_cond_kwargs=added)
    unet_flop = counter.get_total_flops()
    decode_flop = (results.get("flops") or {}).get("taesd_decode", 0.1414e12) * 4
    best = min(times)
    results["sdxl_1024"] = {"s": times, "unet_s": calls, "text_s": parts["text"], "decode_s": parts["decode"],
                            "unet_tflop": unet_flop / 1e12, "taesd_tflop": decode_flop / 1e12}
    out(f"SDXL 1024 1-step TAESD: best {best:.2f}s ({tflops(unet_flop + decode_flop, best)} TFLOP/s), all "
        f"{[round(t, 2) for t in times]}; UNet call {[round(c, 2) for c in calls]} ({unet_flop / 1e12:.3f} TFLOP, "
        f"{tflops(unet_flop, min(calls))} TFLOP/s); text encoders {[round(c, 2) for c in parts['text']]}; TAESD "
        f"decode {[round(c, 2) for c in parts['decode']]} ({decode_flop / 1e12:.3f} TFLOP)")


def _pixels(images):
    import numpy as np
    return ((images.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def _compare(a, b) -> dict:
    import numpy as np
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    mse = float((diff.astype(np.float64) ** 2).mean())
    psnrs = []
    for x, y in zip(a, b):
        m = float(((x.astype(np.float64) - y) ** 2).mean())
        psnrs.append(99.0 if m == 0 else 10 * np.log10(255 ** 2 / m))
    return {"psnr_db": 99.0 if mse == 0 else float(10 * np.log10(255 ** 2 / mse)), "psnr_min_db": min(psnrs),
            "max_abs": int(diff.max()), "mean_abs": float(diff.mean()),
            "share_over_2": float((diff > 2).mean()), "images": len(a)}


def section_bf16vae(model: Path, images: int, results: dict) -> None:
    """The full VAE's decode in bfloat16 against float32 (the image the bf16 UNet's latents give either way)."""
    import copy

    import torch
    rows = {}
    # the demo model's own latents: 20 steps of its sampler at its size, a few prompts and seeds
    demo = demo_pipe()
    prompts = ["a red circle on a blue background", "a green square on a yellow background",
               "a white triangle on a black background", "a purple star on an orange background"]
    latents = []
    for i in range(images):
        latents.append(demo(prompts[i % len(prompts)], num_inference_steps=20, guidance_scale=5.0,
                            generator=torch.Generator().manual_seed(i), output_type="latent").images)
    lat = torch.cat(latents)
    # the yardstick: how far the bfloat16 UNet (what --precision auto runs on a CPU with native bf16) already
    # moves the image from float32's, both decoded by the float32 VAE
    unet32 = demo.unet
    demo.unet = copy.deepcopy(unet32).to(torch.bfloat16)
    demo.text_encoder.to(torch.bfloat16)
    latents16 = []
    for i in range(images):
        latents16.append(demo(prompts[i % len(prompts)], num_inference_steps=20, guidance_scale=5.0,
                              generator=torch.Generator().manual_seed(i), output_type="latent").images.float())
    demo.unet = unet32
    demo.text_encoder.to(torch.float32)
    with torch.no_grad():
        scaled = lambda x: x / demo.vae.config.scaling_factor   # noqa: E731
        a = torch.cat([demo.vae.decode(scaled(lat[i:i + 1])).sample for i in range(len(lat))])
        b = torch.cat([demo.vae.decode(scaled(x)).sample for x in latents16])
    row = _compare(_pixels(a), _pixels(b))
    rows["demo: bfloat16 UNet + float32 VAE (the yardstick)"] = row
    out(f"bf16 UNet demo (yardstick): PSNR {row['psnr_db']:.1f} dB (worst image {row['psnr_min_db']:.1f}), max "
        f"|diff| {row['max_abs']}/255, mean {row['mean_abs']:.2f}")
    # the demo's shipped tiny decoder (models/taesd) in bfloat16 against float32
    from dreamshell.engines.decoders import decode, load_tiny_decoder
    taesd_file = ROOT / "models" / "taesd" / "taesd_demo_decoder.safetensors"
    t32, t16 = load_tiny_decoder(taesd_file), load_tiny_decoder(taesd_file, dtype=torch.bfloat16)
    row = _compare(_pixels(decode(t32, lat)), _pixels(decode(t16, lat)))
    rows["demo TAESD"] = row
    out(f"bf16 TAESD demo: PSNR {row['psnr_db']:.1f} dB (worst image {row['psnr_min_db']:.1f}), max |diff| "
        f"{row['max_abs']}/255, mean {row['mean_abs']:.2f}, {100 * row['share_over_2']:.2f}% of values off by >2")
    from dreamshell.engines.loading import native_bf16
    native = native_bf16()
    cases = [("demo", demo.vae, lat)]
    if native:
        cases.append(("full-size SD 1.5", sd15_pipe(model).vae,
                      torch.randn(max(2, images // 4), 4, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(0))))
    else:   # emulated, on one core: the demo's 64x64 decode took 58x float32's; a 256x256 full-size one ran > 15 min
        out("bf16 VAE full-size SD 1.5: left out on a CPU without native bf16 (its emulated decode takes too long)")
    for name, vae, lat_ in cases:
        scaled = lat_ / vae.config.scaling_factor
        half = copy.deepcopy(vae).to(torch.bfloat16)
        with torch.no_grad():
            f32 = torch.cat([vae.decode(scaled[i:i + 1]).sample for i in range(len(scaled))])
            b16 = torch.cat([half.decode(scaled[i:i + 1].to(torch.bfloat16)).sample.float() for i in range(len(scaled))])
            t32 = best_of(lambda: vae.decode(scaled[:1]), 1)
            t16 = best_of(lambda: half.decode(scaled[:1].to(torch.bfloat16)), 1) if native else float("nan")
        row = _compare(_pixels(f32), _pixels(b16))
        row.update(float32_s=t32, bfloat16_s=t16, size=list(f32.shape[-2:]))
        rows[name] = row
        out(f"bf16 VAE {name}: PSNR {row['psnr_db']:.1f} dB (worst image {row['psnr_min_db']:.1f}), max |diff| "
            f"{row['max_abs']}/255, mean {row['mean_abs']:.2f}, {100 * row['share_over_2']:.2f}% of values off by >2; "
            f"at {row['size'][0]}x{row['size'][1]}; decode float32 {t32:.2f}s, bfloat16 "
            + (f"{t16:.2f}s" if native else "not timed (no native bf16 here: emulated)"))
    results["bf16vae"] = rows


def section_compile(model: Path, full: bool, results: dict) -> None:
    import torch
    rows = {}
    cases = [("demo at 64", demo_pipe(), 64, 20)] + ([("full-size SD 1.5 at 512", sd15_pipe(model), SIZE, 2)]
                                                     if full else [])
    for name, pipe, size, reps in cases:
        lat, t, emb = unet_inputs(pipe, size)
        unet = pipe.unet.to(memory_format=torch.channels_last)
        with torch.no_grad():
            eager = best_of(lambda: unet(lat, t, emb), reps)
            compiled = torch.compile(unet)
            t0 = time.perf_counter()
            compiled(lat, t, emb)
            first = time.perf_counter() - t0
            steady = best_of(lambda: compiled(lat, t, emb), reps)
        rows[name] = {"eager_s": eager, "compile_first_call_s": first, "compiled_s": steady,
                      "speedup": eager / steady, "calls_to_pay_back": (first - steady) / max(eager - steady, 1e-9)
                      if eager > steady else None}
        out(f"compile {name}: eager {eager:.3f}s, first compiled call {first:.1f}s, then {steady:.3f}s "
            f"({eager / steady:.2f}x)")
    results["compile"] = rows


SDCPP = r'''
import json, sys, time
from stable_diffusion_cpp import StableDiffusion
model, taesd, rows, prompt, modes = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4], sys.argv[5].split(",")
res = {}
for mode in modes:
    extra = {"diffusion_conv_direct": True, "vae_conv_direct": True, "flash_attn": True} if mode == "direct" else {}
    for tiny in (False, True):
        sd = StableDiffusion(model_path=model, taesd_path=taesd if tiny else "", n_threads=2, wtype="f32",
                             vae_decode_only=True, verbose=False, **extra)
        warmed = False
        for name, steps, method, scheduler, cfg in rows:
            if steps >= 20 and tiny:
                continue
            kw = dict(width=512, height=512, seed=1, cfg_scale=cfg, sample_steps=steps, sample_method=method,
                      scheduler=scheduler)
            if not warmed:
                sd.generate_image(prompt, **kw)
                warmed = True
            t = time.perf_counter()
            sd.generate_image(prompt, **kw)
            key = f"sd.cpp {mode} | {name} | {'TAESD' if tiny else 'full VAE'}"
            res[key] = time.perf_counter() - t
            print(f"{key}: {res[key]:.2f}s", flush=True)
        del sd
print("JSON " + json.dumps(res), flush=True)
'''


def section_sdcpp(model: Path, taesd: Path, python: str, modes: str, results: dict, skip20: bool) -> None:
    f = results.get("flops") or {}
    rows = [(name, steps, m, s, cfg) for name, steps, _a, _b, cfg, (m, s) in ROWS if not (skip20 and steps >= 20)]
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as fh:
        fh.write(SDCPP)
    proc = subprocess.run([python, fh.name, str(model), str(taesd), json.dumps(rows), PROMPT, modes],
                          capture_output=True, text=True)
    os.unlink(fh.name)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("JSON ")), None)
    if line is None:
        out(f"sd.cpp failed: {proc.stderr[-2000:]}")
        return
    images = results.setdefault("images", {})
    for key, seconds in json.loads(line[5:]).items():
        _runner, name, decoder = key.split(" | ")
        steps, cfg = next((r[1], r[4]) for r in ROWS if r[0] == name)
        calls = steps * (2 if cfg > 1 else 1)
        flop = calls * f.get("unet", 0) + f.get("vae_decode" if decoder == "full VAE" else "taesd_decode", 0)
        images[key] = {"s": seconds, "unet_calls": calls, "tflop": flop / 1e12,
                       "tflop_s": flop / seconds / 1e12 if flop else None, "how": ""}
        out(f"image {key}: {seconds:.2f}s ({tflops(flop, seconds)} TFLOP/s)")


def table(results: dict) -> str:
    rows = results.get("images", {})
    lines = ["| runner | row | decoder | seconds | UNet calls | TFLOP | TFLOP/s |", "|---|---|---|---|---|---|---|"]
    for key, r in rows.items():
        runner, name, decoder = key.split(" | ")
        rate = f"{r['tflop_s']:.3f}" if r.get("tflop_s") else "-"
        how = f" {r['how']}" if r.get("how") else ""
        lines.append(f"| {runner} | {name} | {decoder} | {r['s']:.2f}{how} | {r['unet_calls']} | {r['tflop']:.2f} | "
                     f"{rate} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="the random-weight full-size SD 1.5 file")
    ap.add_argument("--taesd", type=Path, default=None,
                    help="a TAESD decoder file (default: a random one made beside --model)")
    ap.add_argument("--sections", default="peak,flops,layout,images,oneimage,sdxl,bf16vae,compile,sdcpp")
    ap.add_argument("--reps", type=int, default=2, help="timed runs of each short case (best is kept)")
    ap.add_argument("--bf16_images", type=int, default=8)
    ap.add_argument("--compile_full", action="store_true")
    ap.add_argument("--skip20", action="store_true", help="leave out the 20-step rows (minutes each)")
    ap.add_argument("--sdcpp_skip20", action="store_true", help="leave out sd.cpp's 20-step row (40 UNet calls)")
    ap.add_argument("--bf16", action="store_true", help="section images: dreamshell at --precision bfloat16 too")
    ap.add_argument("--rows", default=None,
                    help="section images: only the rows whose names start with these (comma-separated: 20,LCM,1-step)")
    ap.add_argument("--oneimage_rows", default="1-step", help="section oneimage: the rows (1-step,LCM)")
    ap.add_argument("--sdxl_model", type=Path, default=None, help="a random-weight full-size SDXL file (section sdxl)")
    ap.add_argument("--sdcpp_python", default=None, help="an interpreter with stable-diffusion-cpp-python")
    ap.add_argument("--sdcpp_modes", default="default,direct")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: physical cores)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.rows:
        global ROWS
        ROWS = tuple(r for r in ROWS if any(r[0].startswith(x) for x in args.rows.split(",")))
    import torch

    from dreamshell.engines import loading
    from dreamshell.engines.device import quiet_libraries
    quiet_libraries()
    if args.threads:
        torch.set_num_threads(args.threads)
    else:
        loading.set_cpu_threads(torch)
    taesd = args.taesd or make_taesd(args.model.with_name("taesd-random.safetensors"))
    sections = args.sections.split(",")
    results: dict = {"cpu": cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__,
                     "native_bf16": loading.native_bf16()}
    out(f"{results['cpu']}, {results['threads']} torch threads, torch {torch.__version__}, native bf16: "
        f"{results['native_bf16']}")
    started = time.perf_counter()
    if "peak" in sections:
        section_peak(results)
    if {"flops", "images", "oneimage", "sdcpp"} & set(sections):
        section_flops(args.model, taesd, results)
    if "layout" in sections:
        section_layout(args.model, taesd, args.reps, results)
    if "images" in sections:
        section_images(args.model, taesd, args.reps, results, args.skip20, args.bf16)
    if "oneimage" in sections:
        for row in args.oneimage_rows.split(","):
            section_oneimage(args.model, taesd, max(args.reps, 4), results, row)
    if "sdxl" in sections and args.sdxl_model:
        section_sdxl(args.sdxl_model, args.reps, results)
    if "sdcpp" in sections and args.sdcpp_python:
        section_sdcpp(args.model, taesd, args.sdcpp_python, args.sdcpp_modes, results,
                      args.skip20 or args.sdcpp_skip20)
    if "bf16vae" in sections:
        section_bf16vae(args.model, args.bf16_images, results)
    if "compile" in sections:
        section_compile(args.model, args.compile_full, results)
    results["wall_s"] = time.perf_counter() - started
    if results.get("images"):
        out(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                flags = Path("/proc/cpuinfo").read_text()
                isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} CPUs, {isa})"
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    main()
