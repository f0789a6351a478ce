#!/usr/bin/env python
"""Distil the demo model into a few-step one: an LCM-LoRA for dreamshell's built-in demo model.

    python scripts/train_demo_lcm.py --workdir /tmp/lcm            # train (resumable), save the LoRA
    python scripts/train_demo_lcm.py --eval_only   # measure the shipped file (teacher, student at 1, 2, 4, 8 steps)
    python -m dreamshell.demo.evaluate --line "<lora:demo_lcm:1> --preset lcm -s 4"   # one row of it

Latent consistency distillation as Luo et al. run it for LCM-LoRA (arXiv 2310.04378 and 2311.05556;
diffusers examples/consistency_distillation/train_lcm_distill_lora_sd_wds.py): the teacher is the demo
model itself, frozen; the student is the same UNet with a LoRA (rank 32, alpha 32, on the attention
layers and the resnets' 3x3 convolutions); the LoRA learns to map any point of the teacher's
probability-flow ODE straight to its end.

Each step: clean latents z0 of the base model's own scenes and captions (dreamshell.demo.shapes, through
the demo VAE's encoder); a DDIM-grid timestep t_{n+k} of 50 (k = 20: 19, 39, ..., 999); z_{n+k} = z0
noised to it; the teacher's guided prediction at z_{n+k} (CFG 5, the demo model's own default: x0 and
epsilon both guided) and one DDIM step of it to z_n = z at t_n = t_{n+k} - 20; the student's consistency
function at (z_{n+k}, t_{n+k}) is pulled (pseudo-Huber loss, c = 0.001) towards the same function of
the target network (the same UNet with an EMA of the LoRA, decay 0.95, as LCM), without gradient, at (z_n, t_n). The consistency function is diffusers'
LCMScheduler's: c_skip * z + c_out * x0(z) with sigma_data 0.5 and timestep_scaling 10, so the file
samples with `-A LCM` (LCMScheduler), as LCM-LoRA does: `--preset lcm` (4 steps, CFG 1: one UNet call
a step).

Output: a kohya/A1111-format LoRA (UNet only, as LCM-LoRA), float16, ss_* and modelspec metadata, and
--workdir/checkpoint.pt to resume from.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import demo_adapters_common as common  # noqa: E402
from demo_adapters_common import ROOT  # noqa: E402
from train_demo_lora import UNET_CONV_TARGETS, UNET_TARGETS, kohya_state_dict  # noqa: E402

SIGMA_DATA, TIMESTEP_SCALING = 0.5, 10.0   # diffusers LCMScheduler's defaults


def boundary(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """c_skip, c_out of LCMScheduler.get_scalings_for_boundary_condition_discrete at timesteps t."""
    scaled = t.float() * TIMESTEP_SCALING
    c_skip = SIGMA_DATA ** 2 / (scaled ** 2 + SIGMA_DATA ** 2)
    c_out = scaled / (scaled ** 2 + SIGMA_DATA ** 2) ** 0.5
    return c_skip.view(-1, 1, 1, 1), c_out.view(-1, 1, 1, 1)


def x0_from_eps(z, eps, a):
    return (z - (1 - a).sqrt() * eps) / a.sqrt()


def train(args, device) -> dict:
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import save_file

    rng = common.seed_all(args.seed)
    gen = torch.Generator("cpu").manual_seed(args.seed)
    tok, text, vae, teacher, alphas = common.load_parts(device)
    _, _, _, unet, _ = common.load_parts(device)          # the student: the same weights, plus a LoRA
    torch.manual_seed(args.seed)
    targets = f"({UNET_TARGETS})|({UNET_CONV_TARGETS})"
    inject_adapter_in_model(LoraConfig(r=args.rank, lora_alpha=args.rank, target_modules=targets,
                                       init_lora_weights="gaussian"), unet)
    params = [p for p in unet.parameters() if p.requires_grad]
    ema = [p.detach().clone() for p in params]       # the target network's LoRA: an EMA of the student's
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)
    n_params = sum(p.numel() for p in params)
    args.workdir.mkdir(parents=True, exist_ok=True)
    ckpt = args.workdir / "checkpoint.pt"
    start, losses, seconds_before = 0, [], 0.0
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        set_peft_model_state_dict(unet, state["lora"])
        ema = [e.clone() for e in state["ema"]]
        opt.load_state_dict(state["opt"])
        start, losses, seconds_before = state["step"], state["losses"], state["seconds"]
        rng.setstate(state["rng"])
        gen.set_state(state["gen"])
        print(f"resumed at step {start}", flush=True)
    print(f"LCM-LoRA rank {args.rank}: {n_params} trainable parameters on {common.device_label(device)}",
          flush=True)
    k = 1000 // args.ddim_steps
    grid = torch.arange(1, args.ddim_steps + 1, device=device) * k - 1     # 19, 39, ..., 999
    w = args.cfg - 1.0
    with torch.no_grad():
        uncond_one = text(common.ids_for(tok, [""], device)).last_hidden_state
    timer = common.Timer()
    unet.train()
    for step in range(start, args.steps):
        warm = min(1.0, (step + 1) / 100)
        scale = warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for g in opt.param_groups:
            g["lr"] = args.lr * scale
        ex = [common.base_example(rng) for _ in range(args.batch)]
        x = common.images_to_tensor([im for im, _ in ex]).to(device)
        with torch.no_grad():
            z0 = vae.encode(x).latent_dist.mean * vae.config.scaling_factor
            cond = text(common.ids_for(tok, [c for _, c in ex], device)).last_hidden_state
        n = z0.shape[0]
        idx = torch.randint(0, args.ddim_steps, (n,), generator=gen).to(device)
        t_start = grid[idx]
        t_prev = (t_start - k).clamp(min=0)
        a_s = alphas[t_start].view(-1, 1, 1, 1)
        a_p = alphas[t_prev].view(-1, 1, 1, 1)        # t_n = 0 below the grid's first point, as diffusers'
        noise = torch.randn(z0.shape, generator=gen).to(device)
        z_s = a_s.sqrt() * z0 + (1 - a_s).sqrt() * noise
        with torch.no_grad():
            eps = teacher(torch.cat([z_s, z_s]), torch.cat([t_start, t_start]),
                          encoder_hidden_states=torch.cat([cond, uncond_one.expand(n, -1, -1)])).sample
            eps_c, eps_u = eps.chunk(2)
            x0_c, x0_u = x0_from_eps(z_s, eps_c, a_s), x0_from_eps(z_s, eps_u, a_s)
            x0_g = x0_c + w * (x0_c - x0_u)
            eps_g = eps_c + w * (eps_c - eps_u)
            z_p = a_p.sqrt() * x0_g + (1 - a_p).sqrt() * eps_g                 # one DDIM step of the teacher
            cs_p, co_p = boundary(t_prev)
            online = [p.detach().clone() for p in params]
            for p, e in zip(params, ema):
                p.copy_(e)
            target = cs_p * z_p + co_p * x0_from_eps(z_p, unet(z_p, t_prev, encoder_hidden_states=cond).sample, a_p)
            for p, o in zip(params, online):
                p.copy_(o)
        cs_s, co_s = boundary(t_start)
        pred = cs_s * z_s + co_s * x0_from_eps(z_s, unet(z_s, t_start, encoder_hidden_states=cond).sample, a_s)
        loss = (torch.sqrt((pred.float() - target.float()) ** 2 + args.huber_c ** 2) - args.huber_c).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            for p, e in zip(params, ema):
                e.mul_(args.ema).add_(p.detach(), alpha=1 - args.ema)
        losses.append(loss.item())
        done = step + 1
        if done % 50 == 0 or done == args.steps:
            print(f"step {done}/{args.steps} loss(50) {sum(losses[-50:]) / len(losses[-50:]):.5f} "
                  f"{seconds_before + timer():.0f} s", flush=True)
        if done % args.save_every == 0 or done == args.steps:
            torch.save({"lora": get_peft_model_state_dict(unet), "ema": ema, "opt": opt.state_dict(), "step": done,
                        "losses": losses, "seconds": seconds_before + timer(), "rng": rng.getstate(),
                        "gen": gen.get_state()}, ckpt)
            save(args, unet, get_peft_model_state_dict, save_file, done, losses, seconds_before + timer(),
                 n_params, device)
            if args.keep_every:
                import shutil
                shutil.copy(args.out, args.workdir / f"step{done}.safetensors")
    return json.loads(args.out.with_suffix(".json").read_text()).get("training", {})


def save(args, unet, get_sd, save_file, done, losses, seconds, n_params, device) -> None:
    sd = kohya_state_dict(get_sd(unet), {}, args.rank)
    settings = {"method": "latent consistency distillation (LCM-LoRA), teacher: the demo model at CFG "
                          f"{args.cfg:g}, DDIM solver over {args.ddim_steps} timesteps, pseudo-Huber c={args.huber_c}",
                "steps": done, "batch": args.batch, "lr": args.lr, "ema": args.ema, "rank": args.rank, "alpha": args.rank,
                "seed": args.seed, "train_seconds": round(seconds, 1), "device": common.device_label(device),
                "last_loss": round(sum(losses[-100:]) / max(1, len(losses[-100:])), 6),
                "trainable_parameters": n_params}
    meta = {"ss_base_model_version": "sd_v1", "ss_sd_model_name": "dreamshell demo (models/demo)",
            "ss_network_module": "networks.lora", "ss_network_dim": str(args.rank),
            "ss_network_alpha": str(args.rank), "ss_output_name": args.out.stem,
            "ss_max_train_steps": str(done), "ss_total_batch_size": str(args.batch),
            "ss_learning_rate": str(args.lr), "ss_unet_lr": str(args.lr), "ss_text_encoder_lr": "0",
            "ss_network_args": json.dumps({"conv": True}), "ss_seed": str(args.seed), "ss_resolution": "(64, 64)",
            "ss_training_comment": "dreamshell scripts/train_demo_lcm.py: LCM-LoRA of the demo model; sample "
                                   "with LCM, 4 steps, CFG 1 (dreamshell: --preset lcm)",
            "modelspec.title": args.out.stem, "modelspec.architecture": "stable-diffusion-v1/lora",
            "modelspec.usage_hint": "LCM sampler, 2-8 steps, CFG 1",
            "dreamshell.training": json.dumps(settings)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    save_file(sd, str(tmp), metadata=meta)
    tmp.replace(args.out)
    js = args.out.with_suffix(".json")
    old = json.loads(js.read_text()) if js.exists() else {}
    js.write_text(json.dumps(old | {"training": settings}, indent=2) + "\n")
    print(f"saved {args.out} ({args.out.stat().st_size} bytes, {len(sd)} tensors) at step {done}", flush=True)


def measure(args) -> dict:
    """dreamshell.demo.evaluate through dreamshell's own generator (the full grid: 90 prompts x 2 seeds, then
    img2img and inpainting): the 20-step teacher (k_euler, CFG 5, the demo model's defaults), the student
    (`<lora:demo_lcm:1> --preset lcm -s N`) and the demo model alone at the same LCM steps."""
    from dataclasses import asdict

    from dreamshell.demo.evaluate import evaluate
    from dreamshell.engines.generator import DiffusersGenerator
    from dreamshell.weights.models import demo_spec

    timer = common.Timer()
    gen = DiffusersGenerator(device="cpu")
    spec = demo_spec()
    gen.load(spec)
    tag = f"<lora:{args.out.stem}:1>"

    def row(line: str) -> dict:
        scores = asdict(evaluate(gen, spec, line=line))
        print(f"{line or '(the demo model: 20 steps k_euler CFG 5)'}: {scores}", flush=True)
        return {k: (None if math.isnan(v) else round(v, 4)) if isinstance(v, float) else v   # nan: no case ran
                for k, v in scores.items()}

    result = {"measure": "python -m dreamshell.demo.evaluate (the full grid: 90 colour x shape x background "
                         "prompts x seeds 0,1, then 20 img2img and 12 inpainting cases) with --line as below",
              "teacher_20_steps": row(""),
              "student": {n: row(f"{tag} --preset lcm -s {n}") for n in args.eval_steps},
              "demo_alone": {n: row(f"--preset lcm -s {n}") for n in args.eval_steps},
              "lines": {"student": f"{tag} --preset lcm -s N", "demo_alone": "--preset lcm -s N"},
              "eval_seconds": timer(), "eval_device": common.device_label(torch.device("cpu"))}
    js = args.out.with_suffix(".json")
    old = json.loads(js.read_text()) if js.exists() else {}
    js.write_text(json.dumps(old | result, indent=2) + "\n")
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "models" / "loras" / "demo_lcm.safetensors")
    ap.add_argument("--workdir", type=Path, default=ROOT / "train_runs" / "demo_lcm")
    ap.add_argument("--device", default="auto", help="auto (cuda if present), cuda or cpu")
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--cfg", type=float, default=5.0, help="the teacher's guidance (the demo model's default)")
    ap.add_argument("--ddim_steps", type=int, default=50, help="the DDIM solver's grid (k = 1000 / this)")
    ap.add_argument("--huber_c", type=float, default=0.001)
    ap.add_argument("--ema", type=float, default=0.95, help="the target network's EMA decay (LCM's 0.95)")
    ap.add_argument("--keep_every", action="store_true", help="keep each saved file in --workdir (stepN)")
    ap.add_argument("--save_every", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--eval_only", action="store_true", help="measure the file at --out (it must be in the "
                    "LoRA folder dreamshell reads: models/loras) without training")
    ap.add_argument("--eval_steps", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4, 8])
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.eval_only:
        train(args, common.pick_device(args.device))
    if args.out.parent.resolve() == (ROOT / "models" / "loras").resolve():
        measure(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
