#!/usr/bin/env python
"""Train dreamshell's built-in demo model from scratch on procedural shapes (CPU is enough).

Stages: (1) the autoencoder (factor 4: 64x64x3 <-> 16x16x4), (2) the latent scale, (3) the UNet and
the tiny CLIP text encoder jointly (epsilon prediction, SD 1.x noise schedule, caption dropout for
classifier-free guidance, offset noise, EMA). Every --save_every steps it writes a resumable
checkpoint to --workdir and exports the EMA weights as a diffusers folder to --out. Run it again with
the same --workdir to resume; the total CPU time across runs is kept in the checkpoint.

    python scripts/train_demo_model.py --minutes 60
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dreamshell.demo import shapes  # noqa: E402
from dreamshell.demo.tokenizer import write_tokenizer  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

AE_CONFIG = dict(
    in_channels=3, out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 3, up_block_types=["UpDecoderBlock2D"] * 3,
    block_out_channels=[16, 32, 64], layers_per_block=1, latent_channels=4, norm_num_groups=4,
    sample_size=64, mid_block_add_attention=False,
)
UNET_CONFIG = dict(
    sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
    block_out_channels=[32, 64, 128],
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    cross_attention_dim=96, attention_head_dim=8, norm_num_groups=8,
)
TEXT_CONFIG = dict(hidden_size=96, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
                   max_position_embeddings=77, projection_dim=96)
SCHEDULER_CONFIG = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                        beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
                        steps_offset=1, prediction_type="epsilon")


def batch_images(rng: random.Random, n: int) -> tuple[torch.Tensor, list[str]]:
    """n random images in [-1, 1] (N,3,64,64) and captions with random size/position words."""
    imgs, caps = [], []
    for _ in range(n):
        scene = shapes.random_scene(rng)
        imgs.append(np.asarray(shapes.render(scene, rng), dtype=np.float32))
        caps.append(scene.caption(with_size=rng.random() < 0.5, with_position=rng.random() < 0.5))
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2) / 127.5 - 1.0
    return x, caps


def log(msg: str, state: dict) -> None:
    cpu = state["cpu_seconds"] + time.process_time() - state["_t0"]
    print(f"[{time.strftime('%H:%M:%S')} cpu {cpu / 60:6.1f} min] {msg}", flush=True)


def save_checkpoint(workdir: Path, state: dict, modules: dict, opts: dict) -> None:
    state = dict(state)
    state["cpu_seconds"] += time.process_time() - state.pop("_t0")
    blob = {"state": state, "modules": {k: m.state_dict() for k, m in modules.items()},
            "opts": {k: o.state_dict() for k, o in opts.items()}}
    tmp = workdir / "checkpoint.pt.tmp"
    torch.save(blob, tmp)
    os.replace(tmp, workdir / "checkpoint.pt")


def export(out: Path, vae, unet_ema, text_ema, tok_dir: Path, state: dict) -> None:
    """Write the diffusers folder (safetensors) that StableDiffusionPipeline.from_pretrained loads."""
    from diffusers import PNDMScheduler
    out.mkdir(parents=True, exist_ok=True)
    # float16 weights keep the whole model near 10 MB; dreamshell loads them in its own precision
    for module, sub in ((vae, "vae"), (unet_ema, "unet"), (text_ema, "text_encoder")):
        copy.deepcopy(module).to(torch.float16).save_pretrained(out / sub, safe_serialization=True)
    tok_out = out / "tokenizer"
    tok_out.mkdir(exist_ok=True)
    for f in tok_dir.iterdir():
        (tok_out / f.name).write_bytes(f.read_bytes())
    PNDMScheduler(skip_prk_steps=True, **{k: v for k, v in SCHEDULER_CONFIG.items() if k != "clip_sample"}
                  ).save_pretrained(out / "scheduler")
    # PNDM has no clip_sample, but the samplers made from this config (DDIM) must not clip: the
    # latents have unit variance, so clipping x0 to [-1, 1] would wreck them (SD's config says so too)
    sched_json = out / "scheduler" / "scheduler_config.json"
    sched_json.write_text(json.dumps(dict(json.loads(sched_json.read_text()), clip_sample=False), indent=2) + "\n")
    index = {
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
        "feature_extractor": [None, None], "safety_checker": [None, None],
        "requires_safety_checker": False,
        "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    cpu = state["cpu_seconds"] + time.process_time() - state["_t0"]
    (out / "training.json").write_text(json.dumps(
        {"ae_steps": state["ae_step"], "unet_steps": state["unet_step"],
         "cpu_minutes": round(cpu / 60, 1), "scaling_factor": state["scale"],
         "last_loss": state.get("last_loss")}, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=ROOT / "train_runs" / "demo")
    ap.add_argument("--out", type=Path, default=ROOT / "models" / "demo")
    ap.add_argument("--minutes", type=float, default=60.0, help="wall-clock budget of this run")
    ap.add_argument("--ae_steps", type=int, default=1500)
    ap.add_argument("--unet_steps", type=int, default=6000)
    ap.add_argument("--ae_batch", type=int, default=16)
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--save_every", type=int, default=500)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()

    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    deadline = time.time() + args.minutes * 60
    args.workdir.mkdir(parents=True, exist_ok=True)
    tok_dir = args.workdir / "tokenizer"
    vocab_size = write_tokenizer(tok_dir, shapes.vocabulary_words())
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir, local_files_only=True)

    torch.manual_seed(0)
    vae = AutoencoderKL(**AE_CONFIG)
    unet = UNet2DConditionModel(**UNET_CONFIG)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=vocab_size, bos_token_id=tokenizer.bos_token_id,
                                        eos_token_id=tokenizer.eos_token_id,
                                        pad_token_id=tokenizer.pad_token_id, **TEXT_CONFIG))
    unet_ema, text_ema = copy.deepcopy(unet), copy.deepcopy(text)
    opt_ae = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    opt = torch.optim.AdamW(list(unet.parameters()) + list(text.parameters()), lr=3e-4, weight_decay=1e-2)
    modules = {"vae": vae, "unet": unet, "text": text, "unet_ema": unet_ema, "text_ema": text_ema}
    opts = {"ae": opt_ae, "unet": opt}
    state = {"ae_step": 0, "unet_step": 0, "cpu_seconds": 0.0, "scale": None, "seed": 0}
    ckpt = args.workdir / "checkpoint.pt"
    if ckpt.exists():
        blob = torch.load(ckpt, weights_only=False)
        for k, m in modules.items():
            m.load_state_dict(blob["modules"][k])
        for k, o in opts.items():
            o.load_state_dict(blob["opts"][k])
        state.update(blob["state"])
    state["_t0"] = time.process_time()
    print(f"params: vae {sum(p.numel() for p in vae.parameters()) / 1e6:.2f} M, "
          f"unet {sum(p.numel() for p in unet.parameters()) / 1e6:.2f} M, "
          f"text {sum(p.numel() for p in text.parameters()) / 1e6:.3f} M; resuming at "
          f"ae {state['ae_step']}, unet {state['unet_step']}", flush=True)

    # each run continues a fresh but deterministic data stream
    rng = random.Random(1000 + state["ae_step"] + state["unet_step"])
    torch.manual_seed(1000 + state["ae_step"] + state["unet_step"])

    # --- 1. autoencoder
    vae.train()
    while state["ae_step"] < args.ae_steps and time.time() < deadline:
        lr = 1e-3 * 0.5 * (1 + np.cos(np.pi * state["ae_step"] / args.ae_steps))
        for g in opt_ae.param_groups:
            g["lr"] = max(lr, 2e-5)
        x, _ = batch_images(rng, args.ae_batch)
        post = vae.encode(x).latent_dist
        z = post.sample()
        rec = vae.decode(z).sample
        kl = post.kl().mean() / (64 * 64 * 3)
        loss = F.l1_loss(rec, x) + F.mse_loss(rec, x) + 1e-6 * kl
        opt_ae.zero_grad(set_to_none=True)
        loss.backward()
        opt_ae.step()
        state["ae_step"] += 1
        if state["ae_step"] % 100 == 0:
            log(f"ae {state['ae_step']}/{args.ae_steps} loss {loss.item():.4f} "
                f"l1 {F.l1_loss(rec, x).item():.4f}", state)
        if state["ae_step"] % args.save_every == 0:
            save_checkpoint(args.workdir, state, modules, opts)
    if state["ae_step"] < args.ae_steps:
        save_checkpoint(args.workdir, state, modules, opts)
        log("time budget spent during the autoencoder stage; run again to resume", state)
        return
    vae.eval()
    vae.requires_grad_(False)

    # --- 2. latent scale (so latents have unit variance, as SD's 0.18215 does for its VAE)
    if state["scale"] is None:
        with torch.no_grad():
            zs = [vae.encode(batch_images(random.Random(7 + i), 64)[0]).latent_dist.mean for i in range(8)]
        state["scale"] = float(1.0 / torch.cat(zs).std())
        log(f"latent scaling factor {state['scale']:.4f}", state)
    vae.register_to_config(scaling_factor=state["scale"])

    # --- 3. UNet + text encoder
    sched = DDPMScheduler(**{k: v for k, v in SCHEDULER_CONFIG.items() if k not in ("set_alpha_to_one", "steps_offset")})
    alphas = sched.alphas_cumprod
    unet.train()
    text.train()
    empty = tokenizer([""], padding="max_length", max_length=77, return_tensors="pt").input_ids
    losses: list[float] = []
    while state["unet_step"] < args.unet_steps and time.time() < deadline:
        step = state["unet_step"]
        warm = min(1.0, (step + 1) / 500)
        lr = 3e-4 * warm * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * step / args.unet_steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        x, caps = batch_images(rng, args.batch)
        ids = tokenizer(caps, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        drop = torch.rand(len(caps)) < 0.1
        ids[drop] = empty
        with torch.no_grad():
            z = vae.encode(x).latent_dist.sample() * state["scale"]
        noise = torch.randn_like(z) + 0.1 * torch.randn(z.shape[0], z.shape[1], 1, 1)
        t = torch.randint(0, 1000, (z.shape[0],))
        a = alphas[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z + (1 - a).sqrt() * noise
        cond = text(ids).last_hidden_state
        pred = unet(zt, t, encoder_hidden_states=cond).sample
        loss = F.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(unet.parameters()) + list(text.parameters()), 1.0)
        opt.step()
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for ema, live in ((unet_ema, unet), (text_ema, text)):
                for pe, pl in zip(ema.parameters(), live.parameters()):
                    pe.mul_(decay).add_(pl.detach(), alpha=1 - decay)
        state["unet_step"] += 1
        losses.append(loss.item())
        if state["unet_step"] % 100 == 0:
            state["last_loss"] = round(float(np.mean(losses[-100:])), 5)
            log(f"unet {state['unet_step']}/{args.unet_steps} loss(100) {state['last_loss']:.4f} lr {lr:.2e}", state)
        if state["unet_step"] % args.save_every == 0:
            save_checkpoint(args.workdir, state, modules, opts)
            export(args.out, vae, unet_ema, text_ema, tok_dir, state)
            log(f"exported to {args.out}", state)
    save_checkpoint(args.workdir, state, modules, opts)
    export(args.out, vae, unet_ema, text_ema, tok_dir, state)
    log(f"stopped at unet step {state['unet_step']}; exported to {args.out}", state)


if __name__ == "__main__":
    main()
