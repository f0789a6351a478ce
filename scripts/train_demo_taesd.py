#!/usr/bin/env python
"""Train a tiny decoder (and encoder) for the demo model: TAESD's architecture, distilled from the demo VAE.

    python scripts/train_demo_taesd.py --workdir /work/scratch/train/taesd      # train (resumable), export, measure
    python scripts/train_demo_taesd.py --eval_only                              # measure the shipped files

The network is diffusers' `AutoencoderTiny` (madebyollin's TAESD: plain 3x3 convolutions, ReLU, residual
blocks of three convolutions, nearest upsampling, tanh clamp of the input latents) configured for the demo
latents: 4 channels and factor 4, so one upsampling stage fewer than SD's factor 8
(`num_decoder_blocks=(3, 3, 1)`, `num_encoder_blocks=(1, 3, 3)`), and 32 channels instead of 64 (at 64 it
would cost about four times the demo VAE's own decoder; at 32 about the same).

Like every TAESD it works on the latents the UNet sees (VAE latent x scaling factor): its config has
`scaling_factor` 1.0, so `StableDiffusionPipeline` hands it the UNet's latents unchanged
(`vae.decode(latents / vae.config.scaling_factor)`), and `AutoencoderTiny.decode` returns [-1, 1].

Distillation: the decoder learns `tiny.decode(z) = demo_vae.decode(z / 0.2808)` on (a) latents of freshly
drawn scenes (`dreamshell/demo/shapes.py`) encoded by the demo VAE (posterior samples and means), and (b) a
bank of latents the demo UNet produces (20 Euler steps, CFG 5, random captions: the final latents and the
predicted clean latents at steps 5, 10 and 15, which are what a live preview decodes), flipped and rotated
(any latent is a valid input: the target is the teacher's decoding of that same latent). The encoder learns
`tiny.encode(x) = demo_vae.encode(x).mean x 0.2808` on the drawn scenes. Loss: L1 + L2 in pixels (target
clamped to [-1, 1]) for the decoder, L2 for the encoder; AdamW, cosine learning rate.

Output (--out, default models/taesd): `demo-taesd/` (an AutoencoderTiny folder: config.json +
diffusion_pytorch_model.safetensors), the same weights as single files in madebyollin's layout
(`taesd_demo_decoder.safetensors`, `taesd_demo_encoder.safetensors`: the keys of taesd.py's
`nn.Sequential` Decoder/Encoder, decoder indices shifted by one for its leading Clamp), and `demo-taesd.json`
(training settings, CPU minutes, and the measure: the same 180 latents of `dreamshell.demo.evaluate`'s
90 prompts x 2 seeds decoded by the demo VAE and by the tiny decoder, read by `shapes.read_image`).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import demo_adapters_common as common  # noqa: E402
from demo_adapters_common import ROOT  # noqa: E402

from dreamshell.demo import shapes  # noqa: E402

WIDTH = 32
DECODER_BLOCKS = (3, 3, 1)
ENCODER_BLOCKS = (1, 3, 3)
BANK_STEPS = (5, 10, 15)     # Euler steps (of 20) whose predicted clean latent goes into the bank too


def tiny_config(width: int) -> dict:
    n = len(DECODER_BLOCKS)
    return dict(in_channels=3, out_channels=3, encoder_block_out_channels=(width,) * n,
                decoder_block_out_channels=(width,) * n, act_fn="relu", upsample_fn="nearest", latent_channels=4,
                upsampling_scaling_factor=2, num_encoder_blocks=ENCODER_BLOCKS, num_decoder_blocks=DECODER_BLOCKS,
                latent_magnitude=3, latent_shift=0.5, force_upcast=False, scaling_factor=1.0, shift_factor=0.0)


# ----- madebyollin's single-file layout

def to_original_layout(state_dict: dict) -> tuple[dict, dict]:
    """diffusers AutoencoderTiny keys -> (decoder, encoder) dicts keyed as madebyollin's taesd.py.

    taesd.py's Decoder is nn.Sequential(Clamp(), conv, ReLU, Block x3, Upsample, conv, ...), diffusers'
    DecoderTiny.layers the same without the Clamp (it is a tanh in forward): decoder `layers.{i}.` is
    `{i + 1}.`. Its Encoder and diffusers' EncoderTiny.layers have the same indices: `layers.{i}.` is `{i}.`.
    Inside a Block both use `conv.0/.2/.4` (3x3, bias) and `skip` (none when in == out channels)."""
    dec, enc = {}, {}
    for key, w in state_dict.items():
        part, layers, index, rest = key.split(".", 3)
        assert layers == "layers", key
        if part == "decoder":
            dec[f"{int(index) + 1}.{rest}"] = w
        elif part == "encoder":
            enc[f"{index}.{rest}"] = w
        else:
            raise KeyError(key)
    return dec, enc


def from_original_layout(decoder: dict, encoder: dict) -> dict:
    """The inverse of to_original_layout."""
    out = {}
    for key, w in decoder.items():
        index, rest = key.split(".", 1)
        out[f"decoder.layers.{int(index) - 1}.{rest}"] = w
    for key, w in encoder.items():
        index, rest = key.split(".", 1)
        out[f"encoder.layers.{index}.{rest}"] = w
    return out


# ----- data

def scene_batch(rng: random.Random, n: int) -> torch.Tensor:
    return common.images_to_tensor([common.base_example(rng)[0] for _ in range(n)])


def sample_latents(pipe, captions: list[str], seeds: list[int], keep_steps=()) -> tuple[torch.Tensor, torch.Tensor]:
    """The demo pipeline's final latents (UNet space) for captions x seeds (20 Euler steps, CFG 5), and the
    scheduler's predicted clean latents at `keep_steps`."""
    sched = pipe.scheduler
    kept: list[torch.Tensor] = []
    step_no = {"i": 0}
    original = sched.step

    def step(*a, return_dict: bool = True, **k):
        out = original(*a, return_dict=True, **k)
        step_no["i"] += 1
        if step_no["i"] in keep_steps:
            kept.append(out.pred_original_sample.detach().clone())
        return out if return_dict else (out.prev_sample,)

    sched.step = step
    try:
        gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        with torch.no_grad():
            z = pipe(captions, num_inference_steps=common.STEPS, guidance_scale=common.CFG, height=common.SIZE,
                     width=common.SIZE, generator=gens, output_type="latent").images
    finally:
        sched.step = original
    return z, (torch.cat(kept) if kept else z[:0])


def make_bank(pipe, path: Path, n: int, batch: int) -> torch.Tensor:
    """n UNet final latents + their predicted clean latents at BANK_STEPS (random captions, seeds from 10000);
    cached in `path` and extended where a run stopped."""
    done = torch.load(path) if path.exists() else {"final": [], "mid": []}
    rng = random.Random(4242)
    caps = [common.base_example(rng)[1] for _ in range(n)]
    have = sum(len(z) for z in done["final"])
    t0 = time.perf_counter()
    while have < n:
        m = min(batch, n - have)
        z, mid = sample_latents(pipe, caps[have:have + m], list(range(10000 + have, 10000 + have + m)), BANK_STEPS)
        done["final"].append(z)
        done["mid"].append(mid)
        have += m
        torch.save(done, str(path) + ".tmp")
        os.replace(str(path) + ".tmp", path)
        print(f"bank {have}/{n} latents ({time.perf_counter() - t0:.0f} s)", flush=True)
    return torch.cat(done["final"] + done["mid"])


def augment(z: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random flips and quarter turns per latent, and small noise on a quarter of them."""
    out = []
    for i in range(z.shape[0]):
        r = torch.randint(0, 8, (1,), generator=gen).item()
        x = torch.rot90(z[i], r % 4, (1, 2))
        out.append(x.flip(2) if r >= 4 else x)
    z = torch.stack(out)
    noisy = (torch.rand(z.shape[0], generator=gen) < 0.25).float().view(-1, 1, 1, 1)
    return z + noisy * 0.1 * torch.randn(z.shape, generator=gen)


# ----- training

def save_checkpoint(workdir: Path, state: dict, tiny, ema, opt) -> None:
    blob = {"state": state, "tiny": tiny.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict()}
    tmp = workdir / "checkpoint.pt.tmp"
    torch.save(blob, tmp)
    os.replace(tmp, workdir / "checkpoint.pt")


def train(args) -> dict:
    from diffusers import AutoencoderTiny

    device = torch.device("cpu")
    args.workdir.mkdir(parents=True, exist_ok=True)
    tok, text, vae, unet, alphas = common.load_parts(device)
    scale = vae.config.scaling_factor
    pipe = common.pipeline(device)
    bank = make_bank(pipe, args.workdir / "bank.pt", args.bank, args.batch)
    print(f"bank: {len(bank)} latents (UNet final and mid-denoising)", flush=True)

    torch.manual_seed(0)
    tiny = AutoencoderTiny(**tiny_config(args.width))
    ema = copy.deepcopy(tiny).requires_grad_(False)
    opt = torch.optim.AdamW(tiny.parameters(), lr=args.lr, weight_decay=0.0)
    state = {"step": 0, "cpu_seconds": 0.0, "losses": []}
    ckpt = args.workdir / "checkpoint.pt"
    if ckpt.exists():
        blob = torch.load(ckpt, weights_only=False)
        tiny.load_state_dict(blob["tiny"])
        ema.load_state_dict(blob["ema"])
        opt.load_state_dict(blob["opt"])
        state.update(blob["state"])
    print(f"AutoencoderTiny width {args.width}: decoder {sum(p.numel() for p in tiny.decoder.parameters())} "
          f"and encoder {sum(p.numel() for p in tiny.encoder.parameters())} parameters; resuming at step "
          f"{state['step']} of {args.steps}", flush=True)
    rng = random.Random(1000 + state["step"])
    gen = torch.Generator("cpu").manual_seed(1000 + state["step"])
    cpu0 = time.process_time()
    tiny.train()
    while state["step"] < args.steps:
        step = state["step"]
        lr = args.lr * min(1.0, (step + 1) / 100) * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * step / args.steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        half = args.batch // 2
        x = scene_batch(rng, half)
        with torch.no_grad():
            post = vae.encode(x).latent_dist
            z_mean = post.mean * scale
            z_scene = torch.where(torch.rand(half, 1, 1, 1, generator=gen) < 0.5, post.sample(gen) * scale, z_mean)
            z_bank = augment(bank[torch.randint(0, len(bank), (args.batch - half,), generator=gen)], gen)
            z = torch.cat([z_scene, z_bank])
            target = vae.decode(z / scale).sample.clamp(-1, 1)
        pred = tiny.decode(z).sample
        loss_dec = F.l1_loss(pred, target) + F.mse_loss(pred, target)
        loss_enc = F.mse_loss(tiny.encode(x).latents, z_mean)
        loss = loss_dec + args.enc_weight * loss_enc
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tiny.parameters(), 1.0)
        opt.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pl in zip(ema.parameters(), tiny.parameters()):
                pe.mul_(decay).add_(pl.detach(), alpha=1 - decay)
        state["step"] += 1
        state["losses"].append([round(loss_dec.item(), 5), round(loss_enc.item(), 5)])
        if state["step"] % 50 == 0 or state["step"] == args.steps:
            d, e = np.mean(state["losses"][-50:], axis=0)
            cpu = state["cpu_seconds"] + time.process_time() - cpu0
            print(f"[{time.strftime('%H:%M:%S')} cpu {cpu / 60:6.1f} min] step {state['step']}/{args.steps} "
                  f"decoder L1+L2 {d:.4f} encoder L2 {e:.4f} lr {lr:.2e}", flush=True)
        if state["step"] % args.save_every == 0 or state["step"] == args.steps:
            state["cpu_seconds"] += time.process_time() - cpu0
            cpu0 = time.process_time()
            state["losses"] = state["losses"][-200:]
            save_checkpoint(args.workdir, state, tiny, ema, opt)
    d, e = np.mean(state["losses"][-50:], axis=0)
    return {"steps": state["step"], "batch": args.batch, "lr": args.lr, "ema": args.ema, "width": args.width,
            "enc_weight": args.enc_weight, "bank_latents": len(bank), "bank_prompts": args.bank,
            "cpu_minutes": round(state["cpu_seconds"] / 60, 1),
            "cpu_minutes_note": "process CPU time (both threads) of the training loop, bank generation excluded",
            "last_decoder_loss": round(float(d), 5), "last_encoder_loss": round(float(e), 5),
            "device": common.device_label(device)}, ema


def export(tiny, out: Path, settings: dict | None) -> None:
    from safetensors.torch import save_file

    from safetensors.torch import load_file

    folder = out / "demo-taesd"
    tiny.save_pretrained(folder, safe_serialization=True)
    # float16 weights (as the demo model's); converted in the file, not with Module.to, which warns
    weights = folder / "diffusion_pytorch_model.safetensors"
    sd = {k: v.to(torch.float16).contiguous() for k, v in load_file(str(weights)).items()}
    save_file(sd, str(weights), metadata={"format": "pt"})
    # AutoencoderTiny registers block_out_channels itself (a copy of decoder_block_out_channels) and warns
    # when a config.json passes it back; madebyollin's own folders do not have it
    cfg_path = folder / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("block_out_channels", None)
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    dec, enc = to_original_layout(sd)
    meta = {"format": "pt", "dreamshell.taesd": json.dumps(
        {"for": "dreamshell demo model (models/demo): 4 latent channels, factor 4", "width": settings and
         settings["width"] or WIDTH, "decoder_blocks": DECODER_BLOCKS, "encoder_blocks": ENCODER_BLOCKS,
         "latents": "the UNet's (VAE latent x 0.2808), as every TAESD"})}
    save_file(dec, str(out / "taesd_demo_decoder.safetensors"), metadata=meta)
    save_file(enc, str(out / "taesd_demo_encoder.safetensors"), metadata=meta)
    print(f"exported {folder} and {out}/taesd_demo_decoder.safetensors, taesd_demo_encoder.safetensors", flush=True)


# ----- measure

def eval_latents(pipe, cache: Path) -> tuple[list, torch.Tensor]:
    """The latents of evaluate's 90 prompts x seeds 0, 1 (20 Euler steps, CFG 5), cached."""
    from dreamshell.demo.evaluate import grid
    triples = [t for t in grid(small=False) for _ in common.SEEDS]
    if cache.exists():
        return triples, torch.load(cache)
    caps = [f"a {c} {s} on a {b} background" for c, s, b in grid(small=False)]
    jobs = [(p, s) for p in caps for s in common.SEEDS]
    zs = []
    for i in range(0, len(jobs), 30):
        z, _ = sample_latents(pipe, [p for p, _ in jobs[i:i + 30]], [s for _, s in jobs[i:i + 30]])
        zs.append(z)
        print(f"eval latents {min(i + 30, len(jobs))}/{len(jobs)}", flush=True)
    z = torch.cat(zs)
    torch.save(z, cache)
    return triples, z


def to_images(x: torch.Tensor) -> list:
    from PIL import Image
    arr = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a) for a in arr]


def read_rates(triples, images) -> dict:
    hits = {"colour": 0, "shape": 0, "background": 0, "all": 0}
    for (c, s, b), img in zip(triples, images):
        r = shapes.read_image(img)
        hits["colour"] += r.colour == c
        hits["shape"] += r.shape == s
        hits["background"] += r.background == b
        hits["all"] += (r.colour, r.shape, r.background) == (c, s, b)
    return {k: round(v / len(images), 4) for k, v in hits.items()}


def measure(args, settings: dict | None) -> dict:
    from diffusers import AutoencoderTiny
    from safetensors.torch import load_file

    device = torch.device("cpu")
    folder = args.out / "demo-taesd"
    tiny = AutoencoderTiny.from_pretrained(folder, local_files_only=True, dtype=torch.float32).eval()
    single = from_original_layout(load_file(str(args.out / "taesd_demo_decoder.safetensors")),
                                  load_file(str(args.out / "taesd_demo_encoder.safetensors")))
    same = set(single) == set(tiny.state_dict()) and all(
        torch.equal(single[k].float(), v) for k, v in tiny.state_dict().items())
    pipe = common.pipeline(device)
    vae = pipe.vae
    scale = vae.config.scaling_factor
    args.workdir.mkdir(parents=True, exist_ok=True)
    triples, z = eval_latents(pipe, args.workdir / "eval_latents.pt")
    with torch.no_grad():
        t0 = time.perf_counter()
        full = torch.cat([vae.decode(z[i:i + 30] / scale).sample for i in range(0, len(z), 30)])
        t_full = time.perf_counter() - t0
        t0 = time.perf_counter()
        small = torch.cat([tiny.decode(z[i:i + 30]).sample for i in range(0, len(z), 30)])
        t_tiny = time.perf_counter() - t0
        # the encoder: a round trip of drawn scenes through the tiny encoder and the demo VAE's decoder
        x = scene_batch(random.Random(77), 64)
        z_vae = vae.encode(x).latent_dist.mean * scale
        z_tiny = tiny.encode(x).latents
        rt = vae.decode(z_tiny / scale).sample
    imgs_full, imgs_tiny = to_images(full), to_images(small)
    def reading(img):
        r = shapes.read_image(img)
        return r.colour, r.shape, r.background

    agree = sum(reading(a) == reading(b) for a, b in zip(imgs_full, imgs_tiny))
    px = np.abs(np.stack([np.asarray(a, np.float32) for a in imgs_full]) -
                np.stack([np.asarray(b, np.float32) for b in imgs_tiny]))
    labels = np.mean([np.mean(shapes.classify_pixels(a) == shapes.classify_pixels(b))
                      for a, b in zip(imgs_full, imgs_tiny)])
    if args.samples:
        from PIL import Image
        strip = Image.new("RGB", (64 * 12, 128))
        for i in range(12):
            strip.paste(imgs_full[i * 15], (64 * i, 0))
            strip.paste(imgs_tiny[i * 15], (64 * i, 64))
        strip.save(args.samples)
    if settings is None and args.json.exists():
        settings = json.loads(args.json.read_text()).get("training")
    result = {
        "what": "a tiny decoder (and encoder) for the demo model: diffusers AutoencoderTiny (TAESD), factor 4, "
                f"{(settings or {}).get('width', WIDTH)} channels, distilled from the demo VAE",
        "files": {"diffusers_folder": "demo-taesd", "decoder_single_file": "taesd_demo_decoder.safetensors",
                  "encoder_single_file": "taesd_demo_encoder.safetensors",
                  "single_files_equal_folder": same},
        "measure": "the final latents of dreamshell.demo.evaluate's 90 prompts x seeds 0,1 (plain diffusers "
                   "StableDiffusionPipeline, EulerDiscreteScheduler, 20 steps, CFG 5, 64x64, output_type latent), "
                   "decoded by the demo VAE and by the tiny decoder, read by shapes.read_image",
        "demo_vae": read_rates(triples, imgs_full),
        "tiny_decoder": read_rates(triples, imgs_tiny),
        "same_reading": round(agree / len(imgs_full), 4),
        "same_palette_label_per_pixel": round(float(labels), 4),
        "mean_abs_pixel_difference": round(float(px.mean()), 2),
        "decode_seconds_180_images": {"demo_vae": round(t_full, 2), "tiny": round(t_tiny, 2),
                                      "note": "float32, this CPU, batches of 30; indicative only"},
        "encoder_latent_rmse": round(float((z_vae - z_tiny).pow(2).mean().sqrt()), 4),
        "encoder_round_trip_mean_abs_pixel_difference": round(float((rt.clamp(-1, 1) - x).abs().mean() * 127.5), 2),
        "training": settings,
    }
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("demo_vae", "tiny_decoder", "same_reading",
                                             "same_palette_label_per_pixel", "mean_abs_pixel_difference",
                                             "decode_seconds_180_images", "encoder_latent_rmse",
                                             "encoder_round_trip_mean_abs_pixel_difference")}, indent=1), flush=True)
    return result


def through_dreamshell(args, small: bool) -> dict:
    """dreamshell.demo.evaluate's seven figures through dreamshell's own generator, with the demo VAE and with
    the tiny one put in its pipelines' place (until the engine has --decoder: the same swap by hand). The
    tiny encoder then also encodes the img2img and inpainting inputs."""
    from diffusers import AutoencoderTiny

    from dreamshell.demo.evaluate import evaluate
    from dreamshell.engines.generator import DiffusersGenerator
    from dreamshell.weights.models import demo_spec

    out = {}
    for name in ("demo_vae", "tiny"):
        spec = demo_spec()
        generator = DiffusersGenerator(device="cpu")
        generator.load(spec)
        if name == "tiny":
            tiny = AutoencoderTiny.from_pretrained(args.out / "demo-taesd", local_files_only=True,
                                                   dtype=torch.float32).eval()
            for pipe in generator._pipes.values():
                pipe.vae = tiny
        scores = evaluate(generator, spec, small=small)
        print(f"through dreamshell, {name}:\n{scores.table()}", flush=True)
        out[name] = {k: round(v, 4) if isinstance(v, float) else v for k, v in scores.__dict__.items()}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=ROOT / "train_runs" / "taesd",
                    help="checkpoint, latent bank and evaluation latents (resumable)")
    ap.add_argument("--out", type=Path, default=ROOT / "models" / "taesd")
    ap.add_argument("--json", type=Path, default=None, help="default: OUT/demo-taesd.json")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--ema", type=float, default=0.99)
    ap.add_argument("--width", type=int, default=WIDTH)
    ap.add_argument("--enc_weight", type=float, default=1.0)
    ap.add_argument("--bank", type=int, default=256, help="prompts in the bank of UNet latents")
    ap.add_argument("--save_every", type=int, default=100)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--eval_only", action="store_true")
    ap.add_argument("--samples", type=Path, default=None, help="a strip: demo VAE above, tiny decoder below")
    ap.add_argument("--dreamshell", choices=("no", "small", "full"), default="full",
                    help="also run dreamshell.demo.evaluate through dreamshell's generator with each decoder")
    args = ap.parse_args(argv)
    args.json = args.json or args.out / "demo-taesd.json"
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = None
    if not args.eval_only:
        settings, ema = train(args)
        export(ema, args.out, settings)
    result = measure(args, settings)
    if args.dreamshell != "no":
        result["through_dreamshell"] = through_dreamshell(args, small=args.dreamshell == "small")
        result["through_dreamshell"]["measure"] = (
            "python -m dreamshell.demo.evaluate" + (" --small" if args.dreamshell == "small" else "") +
            "'s figures (20 steps k_euler CFG 5, seeds 0,1), dreamshell's DiffusersGenerator on the demo model, "
            "float32; 'tiny': the AutoencoderTiny folder put in place of the demo VAE in its pipelines")
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
