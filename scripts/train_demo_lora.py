#!/usr/bin/env python
"""Train the demo LoRA: a NEW SHAPE, the cross (plus sign), for dreamshell's built-in demo model.

    python scripts/train_demo_lora.py                 # train, save, evaluate (GPU if there is one)
    python scripts/train_demo_lora.py --eval_only     # evaluate the saved file

Why a shape and not a colour: the demo VAE cannot draw a new colour. An orange (240,130,40) shape
encoded and decoded by it comes back as yellow or red (about a third of its pixels stay nearest to
orange), so no LoRA on the UNet could make orange pictures. A large cross survives the VAE (200/200
read back as crosses), and the base model has no cross: "cross" is plain byte tokens to it.

LoRA (peft) on the UNet's attention layers (to_q/k/v/out, proj_in/out, feed-forward) and the text
encoder's attention and MLP layers. Each batch is half cross scenes ("a red cross on a blue
background", sometimes with "large" and a position) and half the base model's own scenes and
captions (10 % of those empty, as in the base training), so the base prompts keep working. Noise as
the base training: epsilon prediction, SD 1.x schedule, offset noise 0.1.

Output: a kohya/A1111-format LoRA (keys lora_unet_<module path with _>.lora_down.weight /
.lora_up.weight / .alpha, lora_te_... for the text encoder), float16, ss_* metadata; and beside it a
.json of the measured rates. Use it in dreamshell as `a red cross on a blue background <lora:demo_cross:1>`.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import demo_adapters_common as common  # noqa: E402
from demo_adapters_common import ROOT  # noqa: E402

from dreamshell.demo import concepts, shapes  # noqa: E402

UNET_TARGETS = (r".*attentions\.\d+\.(proj_in|proj_out|transformer_blocks\.\d+\."
                r"(attn[12]\.(to_q|to_k|to_v|to_out\.0)|ff\.net\.0\.proj|ff\.net\.2))")
UNET_CONV_TARGETS = r".*resnets\.\d+\.(conv1|conv2)"
TE_TARGETS = r".*encoder\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|out_proj)|mlp\.(fc1|fc2))"


def cross_prompts() -> list[tuple[str, str]]:
    """The 30 (colour, background) pairs of the concept measure."""
    return [(c, b) for c in shapes.COLOURS for b in shapes.COLOURS if c != b]


def cross_example(rng: random.Random):
    scene = concepts.random_cross_scene(rng)
    return concepts.render(scene, rng), scene.caption(with_size=rng.random() < 0.3,
                                                        with_position=rng.random() < 0.5)


def kohya_state_dict(unet_sd: dict, te_sd: dict, alpha: float) -> dict[str, torch.Tensor]:
    """peft state dicts (keys '<module>.lora_A.weight') -> kohya keys, float16, with .alpha.

    Text encoder modules are named as in transformers 4's CLIPTextModel (text_model.encoder.layers...),
    the names kohya, A1111 and ComfyUI use; transformers 5 dropped the text_model level, and diffusers
    strips the prefix again when it loads."""
    out: dict[str, torch.Tensor] = {}
    for prefix, sd in (("lora_unet_", unet_sd), ("lora_te_", te_sd)):
        for key, w in sd.items():
            module, kind = key.rsplit(".lora_", 1)
            if prefix == "lora_te_" and not module.startswith("text_model."):
                module = "text_model." + module
            name = prefix + module.replace(".", "_")
            part = {"A.weight": "lora_down.weight", "B.weight": "lora_up.weight"}[kind]
            out[f"{name}.{part}"] = w.detach().to("cpu", torch.float16).contiguous()
            out[f"{name}.alpha"] = torch.tensor(float(alpha), dtype=torch.float16)
    return dict(sorted(out.items()))


def check_against_diffusers(unet_sd: dict, te_sd: dict, ours: dict) -> str:
    """diffusers.utils.convert_state_dict_to_kohya names the same keys (after 'lora_te1_' -> 'lora_te_':
    diffusers writes SDXL's te1 even for SD 1.x, where kohya and A1111 use lora_te_)."""
    from diffusers.utils import convert_state_dict_to_kohya
    peft_sd = {f"unet.{k}": v for k, v in unet_sd.items()} | {
        f"text_encoder.{'' if k.startswith('text_model.') else 'text_model.'}{k}": v for k, v in te_sd.items()}
    theirs = convert_state_dict_to_kohya(peft_sd)
    theirs = {k.replace("lora_te1_", "lora_te_", 1): v for k, v in theirs.items()}
    if set(theirs) != set(ours):
        diff = sorted(set(theirs) ^ set(ours))[:6]
        raise SystemExit(f"key names differ from diffusers' convert_state_dict_to_kohya: {diff}")
    return "same keys as diffusers.utils.convert_state_dict_to_kohya (its lora_te1_ renamed lora_te_)"


def train(args, device) -> dict:
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    rng = common.seed_all(args.seed)
    gen = torch.Generator("cpu").manual_seed(args.seed)
    tok, text, vae, unet, alphas = common.load_parts(device)
    targets = UNET_TARGETS if not args.conv else f"({UNET_TARGETS})|({UNET_CONV_TARGETS})"
    torch.manual_seed(args.seed)
    # plain peft (transformers' own add_adapter wants a newer peft than diffusers does)
    inject_adapter_in_model(LoraConfig(r=args.rank, lora_alpha=args.rank, target_modules=targets,
                                       init_lora_weights="gaussian"), unet)
    if args.text_encoder:
        inject_adapter_in_model(LoraConfig(r=args.rank, lora_alpha=args.rank, target_modules=TE_TARGETS,
                                           init_lora_weights="gaussian"), text)
    u_params = [p for p in unet.parameters() if p.requires_grad]
    t_params = [p for p in text.parameters() if p.requires_grad]
    groups = [{"params": u_params, "lr": args.lr}] + ([{"params": t_params, "lr": args.lr * 0.5}] if t_params else [])
    opt = torch.optim.AdamW(groups, weight_decay=1e-4)
    base_lrs = [g["lr"] for g in opt.param_groups]
    n_params = sum(p.numel() for p in u_params + t_params)
    print(f"LoRA rank {args.rank}: {n_params} trainable parameters on {common.device_label(device)}", flush=True)
    unet.train()
    text.train()
    timer = common.Timer()
    losses = []
    n_cross = args.batch // 2
    for step in range(args.steps):
        warm = min(1.0, (step + 1) / 100)
        scale = warm * (0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(step / args.steps * 3.14159265)).item()))
        for g, lr in zip(opt.param_groups, base_lrs):
            g["lr"] = lr * scale
        ex = [cross_example(rng) for _ in range(n_cross)] + [common.base_example(rng) for _ in range(args.batch - n_cross)]
        caps = [c if i < n_cross or rng.random() >= 0.1 else "" for i, (_, c) in enumerate(ex)]
        x = common.images_to_tensor([im for im, _ in ex])
        zt, t, noise = common.noisy(vae, x, alphas, gen)
        cond = text(common.ids_for(tok, caps, device)).last_hidden_state
        loss = F.mse_loss(unet(zt, t, encoder_hidden_states=cond).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(u_params + t_params, 1.0)
        opt.step()
        losses.append(loss.item())
        if (step + 1) % 100 == 0 or step + 1 == args.steps:
            print(f"step {step + 1}/{args.steps} loss(100) {sum(losses[-100:]) / len(losses[-100:]):.4f} "
                  f"{timer():.0f} s", flush=True)
    seconds = timer()
    unet_sd = get_peft_model_state_dict(unet)
    te_sd = get_peft_model_state_dict(text) if args.text_encoder else {}
    sd = kohya_state_dict(unet_sd, te_sd, args.rank)
    naming = check_against_diffusers(unet_sd, te_sd, sd)
    settings = {"steps": args.steps, "batch": args.batch, "lr_unet": args.lr,
                "lr_text_encoder": args.lr * 0.5 if args.text_encoder else None, "rank": args.rank,
                "alpha": args.rank, "text_encoder": args.text_encoder, "conv": args.conv, "seed": args.seed,
                "cross_fraction": n_cross / args.batch, "train_seconds": seconds,
                "device": common.device_label(device), "last_loss": round(sum(losses[-100:]) / len(losses[-100:]), 5),
                "trainable_parameters": n_params, "naming_check": naming}
    meta = {"ss_base_model_version": "sd_v1", "ss_sd_model_name": "dreamshell demo (models/demo)",
            "ss_network_module": "networks.lora", "ss_network_dim": str(args.rank),
            "ss_network_alpha": str(args.rank), "ss_output_name": args.out.stem,
            "ss_max_train_steps": str(args.steps), "ss_total_batch_size": str(args.batch),
            "ss_learning_rate": str(args.lr), "ss_text_encoder_lr": str(args.lr * 0.5) if args.text_encoder else "0",
            "ss_unet_lr": str(args.lr), "ss_network_args": json.dumps({"conv": args.conv}),
            "ss_seed": str(args.seed), "ss_resolution": "(64, 64)", "ss_noise_offset": "0.1",
            "ss_training_comment": "dreamshell scripts/train_demo_lora.py: a new shape, the cross "
                                   "(a red cross on a blue background); half of each batch the base scenes",
            "modelspec.title": args.out.stem, "modelspec.architecture": "stable-diffusion-v1/lora",
            "dreamshell.training": json.dumps(settings)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(args.out), metadata=meta)
    print(f"saved {args.out} ({args.out.stat().st_size} bytes, {len(sd)} tensors); {naming}", flush=True)
    return settings


def check_loaded(pipe, path: Path, adapter: str) -> dict:
    """Every module of the file got a LoRA layer in the pipeline, with the file's weights."""
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        keys = list(f.keys())
        tensors = {k: f.get_tensor(k) for k in keys}
    modules = {k.split(".")[0] for k in keys}
    named = {"lora_unet_": dict(pipe.unet.named_modules()), "lora_te_": dict(pipe.text_encoder.named_modules())}
    under = {"lora_unet_": {n.replace(".", "_"): n for n in named["lora_unet_"]},
             "lora_te_": {n.replace(".", "_"): n for n in named["lora_te_"]}}
    # transformers 5's CLIPTextModel has no text_model level (see kohya_state_dict)
    under["lora_te_"] |= {"text_model_" + k: v for k, v in under["lora_te_"].items() if not k.startswith("text_model")}
    missing, mismatch = [], []
    for mod in sorted(modules):
        prefix = "lora_unet_" if mod.startswith("lora_unet_") else "lora_te_"
        name = under[prefix].get(mod[len(prefix):])
        layer = named[prefix].get(name) if name else None
        if layer is None or not hasattr(layer, "lora_A") or adapter not in layer.lora_A:
            missing.append(mod)
            continue
        a = layer.lora_A[adapter].weight.detach().float().cpu()
        b = layer.lora_B[adapter].weight.detach().float().cpu()
        if not (torch.equal(a, tensors[f"{mod}.lora_down.weight"].float())
                and torch.equal(b, tensors[f"{mod}.lora_up.weight"].float())):
            mismatch.append(mod)
        scaling = layer.scaling[adapter]
        if abs(scaling - float(tensors[f"{mod}.alpha"]) / a.shape[0]) > 1e-6:
            mismatch.append(mod + " (scaling)")
    extra = sum(1 for m in list(named["lora_unet_"].values()) + list(named["lora_te_"].values())
                if hasattr(m, "lora_A") and adapter in m.lora_A)
    return {"file_modules": len(modules), "loaded_modules": extra, "missing": missing, "mismatched": mismatch}


def cross_rates(pipe, seeds=common.SEEDS) -> tuple[dict, list]:
    pairs = cross_prompts()
    imgs = common.generate(pipe, [f"a {c} cross on a {b} background" for c, b in pairs], seeds=seeds)
    n = len(imgs)
    hits = {"cross": 0, "cross_in_colour": 0, "colour": 0, "cross_colour_background": 0}
    for (c, b), img in zip([p for p in pairs for _ in seeds], imgs):
        obj, strict, fg = concepts.read_cross(img)
        hits["cross"] += obj
        hits["cross_in_colour"] += strict
        hits["colour"] += fg == c
        hits["cross_colour_background"] += obj and fg == c and shapes.read_image(img).background == b
    return {k: round(v / n, 4) for k, v in hits.items()} | {"images": n}, imgs


def base_rates(pipe) -> dict:
    """Base adherence, plus how often concepts.is_cross fires on the base prompts (it should not)."""
    rates, imgs = common.base_adherence(pipe)
    return rates | {"cross_on_base_prompts": round(sum(map(concepts.is_cross, imgs)) / len(imgs), 4)}


def evaluate(args, device, settings: dict | None) -> dict:
    timer = common.Timer()
    pipe = common.pipeline(device)
    without, imgs_without = cross_rates(pipe)
    base_without = base_rates(pipe)
    with common.CaptureWarnings() as cap:
        pipe.load_lora_weights(str(args.out.parent), weight_name=args.out.name, adapter_name="x")
        pipe.set_adapters(["x"], [1.0])
    loaded = check_loaded(pipe, args.out, "x")
    with_, imgs_with = cross_rates(pipe)
    base_with = base_rates(pipe)
    more, _ = cross_rates(pipe, seeds=range(2, 8))
    if args.samples:
        from PIL import Image
        strip = Image.new("RGB", (64 * 12, 128))
        for i in range(12):
            strip.paste(imgs_without[i * 5], (64 * i, 0))
            strip.paste(imgs_with[i * 5], (64 * i, 64))
        strip.save(args.samples)
    if settings is None and args.json.exists():
        settings = json.loads(args.json.read_text()).get("training")
    result = {
        "concept": "cross (a plus sign): a new shape",
        "prompt": "a red cross on a blue background <lora:demo_cross:1>",
        "file": args.out.name,
        "bytes": args.out.stat().st_size,
        "measure": "over 30 prompts 'a {colour} cross on a {background} background' x seeds 0,1; 20 steps "
                   "EulerDiscreteScheduler, CFG 5, 64x64, plain diffusers StableDiffusionPipeline. cross: "
                   "concepts.is_cross (the non-background pixels form a plus sign); cross_in_colour: the "
                   "commonest non-background colour's own pixels do (stricter: colour fringes break it); "
                   "colour: that colour is the asked one; cross_colour_background: cross, colour and "
                   "background all right",
        "cross_rate": {"with_lora": with_, "without_lora": without},
        "cross_rate_seeds_2_to_7_with_lora": more,
        "base_adherence": {"measure": "shapes.read_image over 24 of the 90 base prompts (evaluate.grid) x seeds 0,1",
                           "with_lora": base_with, "without_lora": base_without},
        "load": {"call": "pipe.load_lora_weights(dir, weight_name=..., adapter_name='x'); "
                         "pipe.set_adapters(['x'], [1.0])", "warnings": cap.messages, **loaded},
        "eval_seconds": timer(), "eval_device": common.device_label(device),
        "training": settings,
    }
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("cross_rate", "base_adherence", "load")}, indent=1), flush=True)
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "models" / "loras" / "demo_cross.safetensors")
    ap.add_argument("--json", type=Path, default=None, help="default: --out with .json")
    ap.add_argument("--device", default="auto", help="auto (cuda if present), cuda or cpu")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3, help="UNet LoRA learning rate (text encoder: half)")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--no_text_encoder", dest="text_encoder", action="store_false")
    ap.add_argument("--no_conv", dest="conv", action="store_false",
                    help="LoRA on the attention layers only, not also on the resnets' 3x3 convolutions (LoCon)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--eval_only", action="store_true")
    ap.add_argument("--samples", type=Path, default=None, help="write a strip of samples without/with the LoRA")
    args = ap.parse_args(argv)
    args.json = args.json or args.out.with_suffix(".json")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = common.pick_device(args.device)
    settings = None if args.eval_only else train(args, device)
    evaluate(args, device, settings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
