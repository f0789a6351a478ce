#!/usr/bin/env python
"""Train the demo ControlNet (canny) for dreamshell's built-in demo model.

    python scripts/train_demo_controlnet.py                       # train, save, measure
    python scripts/train_demo_controlnet.py --steps 3 --batch 4   # a smoke run (seconds)
    python scripts/train_demo_controlnet.py --eval_only           # measure the saved file

The ControlNet is diffusers' `ControlNetModel.from_unet` of the demo UNet (its encoder and middle block
copied, zero convolutions at zero), with a conditioning embedding of three stages (16, 32, 64 channels: the
demo VAE's factor is 4, so the 64x64 map comes down to the 16x16 latent). The demo UNet, VAE and text encoder
stay frozen. Data: scenes of the demo's world (dreamshell/demo/shapes.py), each image's canny map made by
dreamshell's own preprocessor (dreamshell/run/preprocess.py: what `--control demo_canny:IMAGE` makes), and a
caption that mostly does not say where the shape is or how big (so the map has to): half the captions empty,
size in 30 %, place in 20 % of the rest; timesteps drawn towards the noisy end (--t_power), where the layout
is decided, and the loss weighted there (1 + min(1/SNR, --snr_cap)). Noise as the base training: epsilon, SD 1.x schedule, offset noise 0.1.

Output: a single .safetensors file with diffusers' ControlNetModel keys, float16, its diffusers config in the
file's metadata (`config`) so it loads offline; and beside it a .json of the measured overlap with and without
it (dreamshell/demo/control_eval.py, through dreamshell). A checkpoint is kept in --workdir every --save_every
steps; a rerun with the same --workdir continues from it.
"""

from __future__ import annotations

import argparse
import json
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

from dreamshell.demo import control_eval, shapes  # noqa: E402
from dreamshell.run.preprocess import make_map  # noqa: E402

CONDITIONING_CHANNELS = (16, 32, 64)


def example(rng: random.Random, empty: float = 0.5):
    """(image, canny map, caption) of one random scene; the caption is empty with probability `empty` (the
    ControlNet paper drops half the prompts, so that the map alone has to carry the layout)."""
    scene = shapes.random_scene(rng)
    image = shapes.render(scene, rng)
    control = make_map(image, "canny", (shapes.SIZE, shapes.SIZE))
    caption = "" if rng.random() < empty else scene.caption(with_size=rng.random() < 0.3,
                                                            with_position=rng.random() < 0.2)
    return image, control, caption


def make_controlnet(unet):
    from diffusers import ControlNetModel
    return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=CONDITIONING_CHANNELS)


def save(controlnet, out: Path, settings: dict) -> None:
    from safetensors.torch import save_file
    sd = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in controlnet.state_dict().items()}
    config = {k: v for k, v in dict(controlnet.config).items() if not k.startswith("_")}
    config["_class_name"] = "ControlNetModel"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    save_file(dict(sorted(sd.items())), str(tmp), metadata={"config": json.dumps(config, sort_keys=True),
                                                             "dreamshell.training": json.dumps(settings)})
    tmp.chmod(0o644)   # safetensors writes 0600; the file ships and installs for every user
    tmp.replace(out)


def make_bank(args, rng, tok, text, vae, device) -> dict:
    """`--bank` examples made once: latents (the VAE's mean, scaled), maps (uint8) and text embeddings, so a step
    costs only the ControlNet and the UNet."""
    latents, maps, embeds = [], [], []
    cache: dict[str, torch.Tensor] = {}
    for i in range(0, args.bank, 256):
        chunk = [example(rng, args.empty) for _ in range(min(256, args.bank - i))]
        with torch.no_grad():
            x = common.images_to_tensor([b[0] for b in chunk]).to(device)
            latents.append(vae.encode(x).latent_dist.mean * vae.config.scaling_factor)
            todo = sorted({b[2] for b in chunk} - set(cache))
            if todo:
                for caption, e in zip(todo, text(common.ids_for(tok, todo, device))[0]):
                    cache[caption] = e
        maps.append(torch.stack([torch.from_numpy(np.array(b[1])).permute(2, 0, 1) for b in chunk]))
        embeds.append(torch.stack([cache[b[2]] for b in chunk]))
    return {"latents": torch.cat(latents), "maps": torch.cat(maps), "embeds": torch.cat(embeds)}


def train(args, device) -> dict:
    rng = common.seed_all(args.seed)
    tok, text, vae, unet, alphas = common.load_parts(device)
    timer = common.Timer()
    bank = make_bank(args, rng, tok, text, vae, device)
    print(f"bank of {args.bank} examples in {timer()} s", flush=True)
    controlnet = make_controlnet(unet).to(device)
    controlnet.train()
    opt = torch.optim.AdamW(controlnet.parameters(), lr=args.lr, weight_decay=0.0)
    gen = torch.Generator("cpu").manual_seed(args.seed)
    start, losses = 0, []
    ckpt = args.workdir / "checkpoint.pt" if args.workdir else None
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        controlnet.load_state_dict(state["controlnet"])
        opt.load_state_dict(state["opt"])
        start, losses = state["step"], state["losses"]
        gen.set_state(state["gen"])
        print(f"continuing from step {start}", flush=True)
    params = sum(p.numel() for p in controlnet.parameters())
    for step in range(start, args.steps):
        pick = torch.randint(0, args.bank, (args.batch,), generator=gen)
        z = bank["latents"][pick]
        cond = (bank["maps"][pick].float() / 255.0).to(device)
        enc = bank["embeds"][pick]
        noise = torch.randn(z.shape, generator=gen).to(device) + 0.1 * torch.randn(
            (z.shape[0], z.shape[1], 1, 1), generator=gen).to(device)
        # timesteps drawn towards the noisy end (t = 999 - 1000 u^p): the layout is decided in the first steps,
        # where z_t says little about where the shape is and only the map can
        u = torch.rand((z.shape[0],), generator=gen)
        t = (999 - (1000 * u.pow(args.t_power)).floor()).clamp(0, 999).long().to(device)
        a = alphas[t].view(-1, 1, 1, 1)
        z_t = a.sqrt() * z + (1 - a).sqrt() * noise
        down, mid = controlnet(z_t, t, encoder_hidden_states=enc, controlnet_cond=cond, return_dict=False)
        pred = unet(z_t, t, encoder_hidden_states=enc, down_block_additional_residuals=down,
                    mid_block_additional_residual=mid).sample
        # epsilon's error weighted towards the noisy end: at t near 999 epsilon is almost z_t, so its plain error
        # hardly sees where the shape goes (the error of the implied x0 is 1/SNR times larger); weight
        # 1 + min(1/SNR, cap) puts the layout in the loss without dropping the detail of the quiet steps
        weight = 1 + ((1 - a) / a).clamp(max=args.snr_cap).view(-1)
        per_example = F.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3))
        loss = (weight * per_example).sum() / weight.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(controlnet.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        done = step + 1
        if done % args.log_every == 0 or done == args.steps:
            recent = sum(losses[-args.log_every:]) / len(losses[-args.log_every:])
            print(f"step {done}/{args.steps} loss {recent:.4f} ({timer()} s)", flush=True)
        if ckpt is not None and (done % args.save_every == 0 or done == args.steps):
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"controlnet": controlnet.state_dict(), "opt": opt.state_dict(), "step": done,
                        "losses": losses, "gen": gen.get_state()}, ckpt.with_suffix(".tmp"))
            ckpt.with_suffix(".tmp").replace(ckpt)
            # the weights so far, where `--eval_only --out WORKDIR/latest/demo_canny.safetensors` can measure them
            save(controlnet, ckpt.parent / "latest" / args.out.name, {"steps": done})
    settings = {"steps": args.steps, "batch": args.batch, "bank": args.bank, "lr": args.lr, "seed": args.seed,
                "empty_captions": args.empty, "t_power": args.t_power, "snr_cap": args.snr_cap,
                "conditioning_channels": list(CONDITIONING_CHANNELS), "parameters": params,
                "last_loss": round(sum(losses[-50:]) / max(1, len(losses[-50:])), 5),
                "seconds_this_run": timer(), "device": common.device_label(device)}
    save(controlnet, args.out, settings)
    return settings


def evaluate(args, settings: dict | None) -> dict:
    """The overlap measure through dreamshell (CPU), with and without the ControlNet."""
    started = time.perf_counter()
    result = control_eval.measure(controlnets=args.out.parent, count=args.cases, seeds=tuple(range(args.seeds)))
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["cases"] = args.cases
    result["seeds"] = list(range(args.seeds))
    out = {"model": "demo", "file": args.out.name, "measure": "dreamshell/demo/control_eval.py", "result": result}
    if settings:
        out["training"] = settings
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "models" / "controlnets" / "demo_canny.safetensors")
    ap.add_argument("--json", type=Path, default=None, help="default: --out with .json")
    ap.add_argument("--workdir", type=Path, default=None, help="checkpoints here (a rerun continues)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--bank", type=int, default=8192, help="examples made once and drawn from")
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--empty", type=float, default=0.5, help="share of empty captions")
    ap.add_argument("--snr_cap", type=float, default=100.0, help="loss weight 1 + min(1/SNR, cap)")
    ap.add_argument("--t_power", type=float, default=1.5,
                    help="timesteps t = 999 - 1000 u^p: p > 1 trains more at the noisy end (1 = uniform)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--log_every", type=int, default=25)
    ap.add_argument("--save_every", type=int, default=100)
    ap.add_argument("--cases", type=int, default=18)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--eval_only", action="store_true")
    ap.add_argument("--no_eval", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = common.pick_device(args.device)
    settings = None
    if not args.eval_only:
        settings = train(args, device)
        print(json.dumps(settings), flush=True)
    if args.no_eval:
        return 0
    report = evaluate(args, settings)
    path = args.json or args.out.with_suffix(".json")
    if args.eval_only and path.exists():
        old = json.loads(path.read_text())
        report["training"] = old.get("training")
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["result"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
