#!/usr/bin/env python
"""Train the demo textual-inversion embedding: a NEW WORD, `yolk`, meaning a yellow circle.

    python scripts/train_demo_embedding.py                # train, save, evaluate (GPU if there is one)
    python scripts/train_demo_embedding.py --eval_only    # evaluate the saved file

Textual inversion cannot add abilities (the model is frozen; only the new word's input vectors
train), so the word names something the demo model already draws but has no single word for:
`a yolk on a blue background` should give a yellow circle on a blue background. Without the
embedding `yolk` is plain byte tokens (y o l k) and means nothing to the model.

Training: the word is --vectors tokens (`yolk`, `yolk_1`, ... as diffusers' load_textual_inversion
expands it), initialised at the mean of the caption words' embeddings; captions "a yolk on a
<background> background" (sometimes with a size and a position) over drawn yellow circles; noise
as the base training (epsilon, SD 1.x schedule, offset noise 0.1).

Output: A1111's safetensors format, one tensor `emb_params` [vectors, 96] float32, file
models/embeddings/yolk.safetensors (the file stem is the word, A1111's rule), and a .json of the
measured rates beside it.
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

BACKGROUNDS = [c for c in shapes.COLOURS if c != concepts.YOLK[0]]
VARIANTS = ("{w}", "large {w}", "small {w}", "{w}|, center", "{w}|, top left", "{w}|, bottom right")


def prompts(word: str) -> list[str]:
    """30 prompts: 5 backgrounds x 6 size/position variants."""
    out = []
    for bg in BACKGROUNDS:
        for v in VARIANTS:
            head, _, tail = v.partition("|")
            out.append(f"a {head.format(w=word)} on a {bg} background{tail}")
    return out


def example(rng: random.Random, words: str):
    colour, shape = concepts.YOLK
    scene = shapes.random_scene(rng, colour=colour, shape=shape)
    cap = scene.caption(with_size=rng.random() < 0.5, with_position=rng.random() < 0.5)
    return shapes.render(scene, rng), cap.replace(f"{colour} {shape}", words)


def train(args, device) -> dict:
    from safetensors.torch import save_file

    rng = common.seed_all(args.seed)
    gen = torch.Generator("cpu").manual_seed(args.seed)
    tok, text, vae, unet, alphas = common.load_parts(device)
    word = args.out.stem
    if word in tok.get_vocab() or tok.tokenize(word) == [word + "</w>"]:
        raise SystemExit(f"{word!r} is a word the demo tokenizer knows; pick another")
    tokens = [word] + [f"{word}_{i}" for i in range(1, args.vectors)]
    tok.add_tokens(tokens)
    ids = tok.convert_tokens_to_ids(tokens)
    text.resize_token_embeddings(len(tok), mean_resizing=False)
    emb = text.get_input_embeddings()
    with torch.no_grad():
        known = [tok.convert_tokens_to_ids(w + "</w>") for w in shapes.vocabulary_words() if len(w) > 1]
        init = emb.weight[known].mean(0)
        emb.weight[ids] = init
    keep = emb.weight.detach().clone()
    emb.weight.requires_grad_(True)
    rows = torch.zeros(emb.weight.shape[0], 1, device=device)
    rows[ids] = 1.0
    opt = torch.optim.AdamW([emb.weight], lr=args.lr, weight_decay=0.0)
    words = " ".join(tokens)
    print(f"word {word!r} as {len(tokens)} vectors on {common.device_label(device)}", flush=True)
    timer = common.Timer()
    losses = []
    for step in range(args.steps):
        warm = min(1.0, (step + 1) / 50)
        for g in opt.param_groups:
            g["lr"] = args.lr * warm
        ex = [example(rng, words) for _ in range(args.batch)]
        x = common.images_to_tensor([im for im, _ in ex])
        zt, t, noise = common.noisy(vae, x, alphas, gen)
        cond = text(common.ids_for(tok, [c for _, c in ex], device)).last_hidden_state
        loss = F.mse_loss(unet(zt, t, encoder_hidden_states=cond).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        emb.weight.grad.mul_(rows)
        opt.step()
        with torch.no_grad():  # only the new rows change
            emb.weight.copy_(keep * (1 - rows) + emb.weight * rows)
        losses.append(loss.item())
        if (step + 1) % 100 == 0 or step + 1 == args.steps:
            print(f"step {step + 1}/{args.steps} loss(100) {sum(losses[-100:]) / len(losses[-100:]):.4f} "
                  f"norm {emb.weight[ids].norm(dim=1).mean().item():.3f} {timer():.0f} s", flush=True)
    seconds = timer()
    vec = emb.weight[ids].detach().to("cpu", torch.float32).contiguous()
    settings = {"word": word, "vectors": args.vectors, "steps": args.steps, "batch": args.batch, "lr": args.lr,
                "seed": args.seed, "train_seconds": seconds, "device": common.device_label(device),
                "last_loss": round(sum(losses[-100:]) / len(losses[-100:]), 5),
                "init": "mean of the caption words' token embeddings"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file({"emb_params": vec}, str(args.out), metadata={
        "name": word, "step": str(args.steps), "sd_checkpoint_name": "dreamshell demo (models/demo)",
        "meaning": "a yellow circle", "dreamshell.training": json.dumps(settings)})
    print(f"saved {args.out} ({args.out.stat().st_size} bytes, emb_params {tuple(vec.shape)})", flush=True)
    return settings


def rates(pipe, word: str, seeds=common.SEEDS) -> dict:
    ps = prompts(word)
    imgs = common.generate(pipe, ps, seeds=seeds)
    hits = [concepts.is_yolk(i) for i in imgs]
    bg_hits = [shapes.read_image(i).background == bg for i, bg in
               zip(imgs, [b for b in BACKGROUNDS for _ in VARIANTS for _ in seeds])]
    per_variant = {}
    for k, v in enumerate(VARIANTS):
        sel = [h for j, h in enumerate(hits) if (j // len(seeds)) % len(VARIANTS) == k]
        per_variant[v.replace("{w}", word).replace("|", "")] = round(sum(sel) / len(sel), 4)
    return {"yellow_circle": round(sum(hits) / len(hits), 4),
            "yellow_circle_and_background": round(sum(h and b for h, b in zip(hits, bg_hits)) / len(hits), 4),
            "by_variant": per_variant, "images": len(imgs)}


def evaluate(args, device, settings: dict | None) -> dict:
    from safetensors.torch import load_file

    timer = common.Timer()
    word = args.out.stem
    pipe = common.pipeline(device)
    without = rates(pipe, word)
    base_without, _ = common.base_adherence(pipe)
    with common.CaptureWarnings() as cap:
        pipe.load_textual_inversion(str(args.out), token=word)
    # the in-memory form loads the same vectors
    vec = load_file(str(args.out))["emb_params"]
    other = common.pipeline(torch.device("cpu"))
    other.load_textual_inversion({word: vec}, token=word)
    tokens = [word] + [f"{word}_{i}" for i in range(1, vec.shape[0])]
    a = pipe.text_encoder.get_input_embeddings().weight[pipe.tokenizer.convert_tokens_to_ids(tokens)].cpu()
    b = other.text_encoder.get_input_embeddings().weight[other.tokenizer.convert_tokens_to_ids(tokens)]
    same = bool(torch.equal(a, b) and torch.equal(a, vec.float()))
    with_ = rates(pipe, word)
    base_with, _ = common.base_adherence(pipe)
    more = rates(pipe, word, seeds=range(2, 8))
    if settings is None and args.json.exists():
        settings = json.loads(args.json.read_text()).get("training")
    result = {
        "concept": "yolk = a yellow circle: a new word for a drawable thing",
        "prompt": f"a {word} on a blue background",
        "file": args.out.name,
        "bytes": args.out.stat().st_size, "shape": list(vec.shape), "dtype": str(vec.dtype).replace("torch.", ""),
        "measure": "concepts.is_yolk (shapes.read_image: colour yellow, shape circle) over 30 prompts "
                   "(5 backgrounds x 6 size/position variants) x seeds 0,1; 20 steps EulerDiscreteScheduler, "
                   "CFG 5, 64x64, plain diffusers StableDiffusionPipeline",
        "yolk_rate": {"with_embedding": with_, "without_embedding": without},
        "yolk_rate_seeds_2_to_7_with_embedding": more,
        "base_adherence": {"measure": "shapes.read_image over 24 of the 90 base prompts (evaluate.grid) x seeds 0,1",
                           "with_embedding": base_with, "without_embedding": base_without},
        "load": {"call": f"pipe.load_textual_inversion('{args.out.name}', token='{word}') or "
                         f"pipe.load_textual_inversion({{'{word}': tensor}}, token='{word}')",
                 "warnings": cap.messages, "both_forms_give_the_file_vectors": same},
        "eval_seconds": timer(), "eval_device": common.device_label(device),
        "training": settings,
    }
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("yolk_rate", "base_adherence", "load")}, indent=1), flush=True)
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "models" / "embeddings" / "yolk.safetensors",
                    help="the file; its stem is the word")
    ap.add_argument("--json", type=Path, default=None, help="default: --out with .json")
    ap.add_argument("--device", default="auto", help="auto (cuda if present), cuda or cpu")
    ap.add_argument("--vectors", type=int, default=2)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--eval_only", action="store_true")
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
