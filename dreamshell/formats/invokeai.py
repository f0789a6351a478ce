"""InvokeAI's formats: the `Dream` command (1.x, 2.x; what `invoke>` parses: InvokeAI 2.2
`ldm/invoke/args.py` `Args.parse_cmd`), the `sd-metadata` JSON (RFC invoke-ai/InvokeAI#266, read by
`metadata_loads`), and InvokeAI 3.x-6.x's `invokeai_metadata` JSON."""

from __future__ import annotations

import json
import re

from ..formatter import format_request
from ..parser import ParseError, _lookup, parse_switches, split_line, strip_log_prefix
from ..prompt import PromptError, extract_negative, split_prompt
from ..samplers import find_sampler
from ..switches import UNSUPPORTED
from .common import APP_ID, Builder, ImageMeta, MetadataError, Recipe, one_line, short

# ----- writing


def dream_text(meta: ImageMeta) -> str:
    """The `Dream` chunk: the canonical command without --model, which InvokeAI 2.x's parser rejects."""
    return format_request(meta.request.with_(model=None))


def _escape_colons(text: str) -> str:
    return re.sub(r"(?<!\\):", r"\\:", text)


def _prompt_list(prompt: str) -> list[dict]:
    """[{prompt, weight}] with literal colons escaped, the negative in [brackets] on the first one."""
    try:
        parts = split_prompt(prompt)
        _, negative = extract_negative(prompt)
    except PromptError:
        return [{"prompt": prompt, "weight": 1.0}]
    neg = f" [{negative}]" if negative else ""
    return [{"prompt": _escape_colons(t) + (neg if i == 0 else ""), "weight": w}
            for i, (t, w) in enumerate(parts.positive)]


def sd_metadata(meta: ImageMeta) -> dict:
    """InvokeAI's sd-metadata JSON as InvokeAI 2.x's `metadata_loads` reads it; a grid is `images`."""
    r = meta.request
    image = {
        "type": meta.image_type if meta.image_type != "grid" else "img2img" if r.init_img else "txt2img", "prompt": _prompt_list(r.prompt),
        "seed": r.seed, "steps": r.steps, "cfg_scale": r.cfg_scale, "sampler": r.sampler, "width": r.width,
        "height": r.height, "variations": [{"seed": s, "weight": w} for s, w in r.with_variations],
        "postprocessing": list(meta.postprocessing) or None, "strength": r.strength, "init_img": r.init_img,
        "init_mask": r.init_mask, "fit": r.fit, "seamless": r.seamless,
        "upscale": [r.upscale.factor, r.upscale.strength] if r.upscale else None,
    }
    if r.schedule:
        image["schedule"] = r.schedule
    data = {"model": "stable diffusion", "model_id": r.model, "model_hash": meta.model_hash,
            "app_id": APP_ID, "app_version": meta.app_version}
    if meta.image_type == "grid" and r.seed is not None:
        data["images"] = [dict(image, seed=r.seed + i) for i in range(r.iterations)]
    else:
        data["image"] = image
    return data


# ----- reading the Dream line


def _is_switch(token: str) -> bool:
    return len(token) > 1 and token[0] == "-" and (token[1].isalpha() or token[1] == "-")


_ALIASES = {"-T": "--fit", "-fit": "--fit", "-save_orig": "--save_original"}   # InvokeAI 2.2's spellings


def _split_known(tokens: list[str], b: Builder) -> list[str]:
    """The tokens dreamshell reads; each unsupported switch is dropped by name with its values."""
    kept: list[str] = []
    i = 0
    while i < len(tokens):
        token = _ALIASES.get(tokens[i], tokens[i])
        i += 1
        if not _is_switch(token) or token in ("-h", "--help", "-b1"):
            kept.append(token)
            continue
        batch_of_one = token in ("-b", "--batch_size") and tokens[i:i + 1] == ["1"]
        if _lookup(token)[0] is not None or batch_of_one:
            kept.append(token)
            continue
        values = []
        while i < len(tokens) and not _is_switch(tokens[i]):
            values.append(tokens[i])
            i += 1
        name = token.split("=", 1)[0]
        if name == "--karras_max" and values and values[0].isdigit():
            b.karras_max = int(values[0])
        what = next((w for s, w in UNSUPPORTED.items() if name == s), "not a dreamshell switch")
        b.drop(" ".join([name, *values]) + f" ({what})")
    return kept


def _version(text) -> tuple[int, int] | None:
    found = re.search(r"(\d+)\.(\d+)", str(text or ""))
    return (int(found.group(1)), int(found.group(2))) if found else None


def anchor_schedule(b: Builder, app_id: str, app_version: str) -> None:
    """InvokeAI 2.1-2.2 ran its k_ samplers on Karras sigmas below `--karras_max` steps (default 30) and
    on the model's own (uniform) sigmas from there (InvokeAI 2.2 `ldm/models/diffusion/ksampler.py`)."""
    version = _version(app_version)
    sampler = b.values.get("sampler") or ""
    if "invoke" not in app_id.lower() or not version or not (2, 1) <= version < (3, 0) \
            or not sampler.startswith("k_") or b.values.get("schedule"):
        return
    limit = getattr(b, "karras_max", 30)
    steps = b.values.get("steps", 50)
    b.values["schedule"] = "karras" if steps < limit else "uniform"
    b.note(f"--schedule {b.values['schedule']}: InvokeAI {app_version} ran {sampler} on "
           f"{'Karras' if steps < limit else 'the model' + chr(39) + 's own'} sigmas at {steps} steps "
           f"(Karras below {limit})")


def read_dream(text: str, source: str = "Dream", app: tuple[str, str] = ("", "")) -> Recipe:
    """An InvokeAI 1.x/2.x (or dreamshell) `Dream` line; switches dreamshell lacks are named, the rest kept.
    `app` is (app_id, app_version) from the file's sd-metadata, when it has one."""
    b = Builder(source)
    try:
        prompt, tokens = split_line(strip_log_prefix(text.strip()).replace("\n", " "))
        values, _ = parse_switches(_split_known(tokens, b))
    except ParseError as e:
        raise MetadataError(f"{source}: {e}") from None
    if any(c in text.strip() for c in "\r\n"):
        b.note("line breaks in the prompt became spaces (a command is one line)")
    b.values.update(values)
    anchor_schedule(b, *app)
    return b.build(prompt)


# ----- reading sd-metadata

_SD_KNOWN = {"type", "prompt", "seed", "steps", "cfg_scale", "sampler", "width", "height", "variations",
             "postprocessing", "strength", "init_img", "init_mask", "fit", "seamless", "upscale", "schedule",
             "orig_hash", "step_number", "strength_steps", "init_image_path", "init_mask_path", "extra"}


def _sd_prompt(prompt) -> str:
    """The prompt of sd-metadata: a string, or [{prompt, weight}] sub-prompts (their [negatives] moved last)."""
    if not isinstance(prompt, list):
        return str(prompt or "")
    parts = [p for p in prompt if isinstance(p, dict)]
    if len(parts) == 1:
        return str(parts[0].get("prompt", ""))
    texts, negatives = [], []
    for p in parts:
        try:
            text, negative = extract_negative(one_line(str(p.get("prompt", ""))))
        except PromptError:
            text, negative = one_line(str(p.get("prompt", ""))), ""
        texts.append(f"{_escape_colons(text)}:{p.get('weight', 1)}")
        negatives += [negative] if negative else []
    return " ".join(texts) + "".join(f" [{n}]" for n in negatives)


def _sd_postprocessing(b: Builder, image: dict) -> None:
    upscale = image.get("upscale")
    for step in image.get("postprocessing") or []:
        if not isinstance(step, dict):
            continue
        kind = str(step.get("type", ""))
        if kind == "esrgan" and not upscale:
            upscale = [step.get("scale", 2), step.get("strength", 0.75)]
        elif kind != "esrgan":
            b.drop(f"postprocessing {kind} " + short(json.dumps({k: v for k, v in step.items() if k != "type"}), 50)
                   + " (not supported by dreamshell)")
    if upscale:
        b.set("-U", [str(x) for x in (upscale if isinstance(upscale, list) else [upscale])], "upscale")


def _sd_image(data) -> tuple[dict, list[dict]]:
    if not isinstance(data, dict):
        raise MetadataError("sd-metadata is not a JSON object")
    images = data.get("images")
    if isinstance(images, list) and images and isinstance(images[0], dict):
        return images[0], images
    image = data.get("image", data)
    if not isinstance(image, dict):
        raise MetadataError("sd-metadata has no image section")
    return image, [image]


def read_sd_metadata(text: str, source: str = "sd-metadata") -> Recipe:
    """InvokeAI's (or our) sd-metadata JSON, `image` or a grid's `images`."""
    try:
        data = json.loads(text)
    except ValueError as e:
        raise MetadataError(f"sd-metadata is not JSON ({e})") from None
    image, images = _sd_image(data)
    app = str(data.get("app_id") or "")
    b = Builder(f"{source} ({short(app, 40)} {short(data.get('app_version') or '', 20)})".replace(" )", ")")
                if app else source)
    for key, switch in (("steps", "-s"), ("cfg_scale", "-C")):
        if image.get(key) is not None:
            b.set(switch, image[key], key)
    if image.get("seed") is not None:
        b.seed(image["seed"])
    if image.get("width") is not None and image.get("height") is not None:
        b.size(image["width"], image["height"])
    sampler = image.get("sampler")
    if sampler:
        found = find_sampler(str(sampler))
        if found:
            b.values["sampler"] = found.name
        else:
            b.drop(f"sampler {short(sampler)} (unknown to dreamshell)")
    if image.get("schedule"):
        b.set("--schedule", image["schedule"], "schedule")
    if image.get("init_img"):
        b.set("-I", image["init_img"], "init_img")
        if image.get("strength") is not None:
            b.set("-f", image["strength"], "strength")
        if image.get("init_mask"):
            b.set("-M", image["init_mask"], "init_mask")
        if image.get("fit"):
            b.values["fit"] = True
    if image.get("seamless"):
        b.values["seamless"] = True
    variations = image.get("variations") or []
    if variations:
        pairs = ",".join(f"{v.get('seed')}:{v.get('weight')}" for v in variations if isinstance(v, dict))
        b.set("-V", pairs, "variations")
    _sd_postprocessing(b, image)
    anchor_schedule(b, app, str(data.get("app_version") or ""))
    if len(images) > 1:
        _grid(b, images)
    if data.get("model_id"):
        b.set("--model", data["model_id"], "model_id")
    for key in sorted(set(image) - _SD_KNOWN):
        if image[key] not in (None, False, 0, 0.0, "", [], {}):
            b.drop(f"{key}: {short(json.dumps(image[key]), 40)}")
    return b.build(_sd_prompt(image.get("prompt")))


def _grid(b: Builder, images: list[dict]) -> None:
    seeds = [i.get("seed") for i in images]
    if all(isinstance(s, int) for s in seeds) and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        b.values["iterations"], b.values["grid"] = len(seeds), True
    else:
        b.note(f"a grid of {len(images)} images (seeds {', '.join(map(str, seeds))}); this is the first one's recipe")


# ----- InvokeAI 3.x-6.x

_SCHEDULER3 = {"dpmpp_2s": ("dpmpp_2s", None), "euler_a": ("k_euler_a", None), "kdpm_2_a": ("k_dpm_2_a", None),
               "kdpm_2": ("k_dpm_2", None), "dpmpp_2m": ("k_dpmpp_2", None), "dpmpp_3m": (None, None),
               "ddpm": (None, None), "tcd": (None, None)}


def _invoke3_sampler(b: Builder, name: str) -> None:
    """InvokeAI 3's scheduler names: `x` is the model's own schedule, `x_k` Karras (invokeai/backend/
    stable_diffusion/schedulers/schedulers.py)."""
    base, karras = (name[:-2], True) if name.endswith("_k") else (name, False)
    ours = _SCHEDULER3.get(base, (None, None))[0] or (find_sampler(base).name if find_sampler(base) else None)
    if ours is None:
        b.drop(f"scheduler {short(name)} (no dreamshell sampler)")
        return
    b.values["sampler"] = ours
    if karras:
        b.values["schedule"] = "karras"


def _model_name(model) -> str | None:
    if isinstance(model, dict):
        return model.get("name") or model.get("model_name")
    return str(model) if model else None


def read_invokeai_metadata(text: str) -> Recipe:
    """InvokeAI 3.x-6.x `invokeai_metadata`: prompts, seed, steps, cfg, size, scheduler, model; the
    rest (LoRAs, VAE, clip skip, refiner, control adapters, init image) named in the note."""
    try:
        data = json.loads(text)
    except ValueError as e:
        raise MetadataError(f"invokeai_metadata is not JSON ({e})") from None
    if not isinstance(data, dict):
        raise MetadataError("invokeai_metadata is not a JSON object")
    version = data.pop("app_version", "")
    b = Builder(f"InvokeAI {version} invokeai_metadata".replace("  ", " "))
    prompt = one_line(str(data.pop("positive_prompt", "") or ""))
    if "[" in prompt or "]" in prompt:
        b.note("square brackets in the prompt became parentheses (in dreamshell [ ] is the negative prompt)")
        prompt = prompt.replace("[", "(").replace("]", ")")
    prompt = _escape_colons(prompt)
    negative = one_line(str(data.pop("negative_prompt", "") or "")).replace("[", "(").replace("]", ")")
    if negative:
        prompt += f" [{_escape_colons(negative)}]"
    if data.get("steps") is not None:
        b.set("-s", data.pop("steps"), "steps")
    if "seed" in data:
        b.seed(data.pop("seed"))
    if data.get("cfg_scale") is not None:
        b.set("-C", data.pop("cfg_scale"), "cfg_scale")
    if data.get("width") is not None and data.get("height") is not None:
        b.size(data.pop("width"), data.pop("height"))
    if data.get("scheduler"):
        _invoke3_sampler(b, str(data.pop("scheduler")))
    model = _model_name(data.pop("model", None))
    if model:
        b.set("--model", model, "model")
    _invoke3_rest(b, data)
    return b.build(prompt)


def _invoke3_rest(b: Builder, data: dict) -> None:
    sx, sy = data.pop("seamless_x", False), data.pop("seamless_y", False)
    if sx and sy:
        b.values["seamless"] = True
    elif sx or sy:
        b.drop(f"seamless on the {'x' if sx else 'y'} axis only (dreamshell tiles both)")
    mode = str(data.pop("generation_mode", "") or "")
    strength = data.pop("strength", None)
    init = data.pop("init_image", None)
    if "img2img" in mode or init:
        b.drop(f"img2img from InvokeAI image {short(init or '?', 40)} at strength {strength} "
               "(an InvokeAI gallery name, not a path: add -I PATH -f STRENGTH)")
    for lora in data.pop("loras", None) or []:
        if isinstance(lora, dict):
            name = _model_name(lora.get("model") or lora.get("lora"))
            b.drop(f"LoRA {name} (weight {lora.get('weight')}; LoRAs come with a later dreamshell)")
    for key in ("clip_skip", "vae", "hrf_enabled"):
        value = data.pop(key, None)
        if value:
            b.drop(f"{key}: {short(_model_name(value) if isinstance(value, dict) else value, 40)} "
                   "(comes with a later dreamshell)")
    for key, value in data.items():
        if key == "rand_device" or value in (None, False, 0, "", [], {}):
            continue
        b.drop(f"{key}: {short(json.dumps(value), 40)}")
