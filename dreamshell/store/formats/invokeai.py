"""InvokeAI's formats: the `Dream` command (1.x, 2.x; what `invoke>` parses: InvokeAI 2.2
`ldm/invoke/args.py` `Args.parse_cmd`), the `sd-metadata` JSON (RFC invoke-ai/InvokeAI#266, read by
`metadata_loads`), and InvokeAI 3.x-6.x's `invokeai_metadata` JSON."""

from __future__ import annotations

import json
import re

from ...line import hires
from ...line.formatter import format_request
from ...line.parser import (
    ParseError,
    _lookup,
    parse_request,
    parse_switches,
    split_line,
    strip_log_prefix,
)
from ...line.prompt import LORA_TAG, PromptError, extract_negative, split_prompt
from ...line.request import DreamRequest
from ...line.samplers import effective_schedule, find_sampler
from ...line.switches import SWITCHES, UNSUPPORTED, format_number
from ...weights.library import RecipeExtras
from .common import (
    APP_ID,
    Builder,
    ImageMeta,
    MetadataError,
    Recipe,
    load_json,
    one_line,
    short,
)

# ----- writing


# InvokeAI 2.2's samplers (ldm/invoke/args.py SAMPLER_CHOICES): its name for each of ours
INVOKEAI2_SAMPLERS = {"ddim": "ddim", "plms": "plms", "k_lms": "k_lms", "k_euler": "k_euler", "k_euler_a": "k_euler_a",
                      "k_heun": "k_heun", "k_dpm_2": "k_dpm_2", "k_dpm_2_a": "k_dpm_2_a", "k_dpmpp_2": "k_dpmpp_2",
                      "k_dpmpp_2_a": "k_dpmpp_2_a"}
# the dream> switches InvokeAI 2.2.5's Args.parse_cmd takes as ours (--model, --schedule, --clip_skip, --vae, the
# hires values, --rng and --ensd it does not); its --hires_fix means a final size of -W x -H (see dream_text)
INVOKEAI2_FIELDS = frozenset({"steps", "seed", "width", "height", "cfg_scale", "sampler", "iterations", "init_img",
                              "strength", "init_mask", "fit", "upscale", "save_original", "grid", "variation_amount",
                              "with_variations", "skip_normalize", "log_tokenization", "outdir", "seamless",
                              "hires_fix"})
KARRAS_ALWAYS = 1000   # --karras_max above every step count: InvokeAI 2.2 runs Karras sigmas below it


def invokeai2_sampler(r: DreamRequest) -> tuple[str | None, int | None]:
    """InvokeAI 2.2's sampler for the request (None: it has none) and the --karras_max that gives its schedule
    (InvokeAI 2.2's k_ samplers run Karras sigmas below --karras_max steps, the model's own from there, and a
    value given once sticks for later lines: every k_ line carries one). A schedule that is neither Karras nor
    uniform gets 0, the model's own (uniform) sigmas, its nearest."""
    found = find_sampler(r.sampler or "")
    if found is None:
        return None, None
    base = find_sampler(found.a1111 or found.name) if found.schedule else found
    name = INVOKEAI2_SAMPLERS.get(base.name) if base else None
    if name is None or not name.startswith("k_"):
        return name, None
    schedule = effective_schedule(base, r.schedule or found.schedule)
    return name, (max(KARRAS_ALWAYS, (r.steps or 0) + 1) if schedule and schedule.name == "karras" else 0)


def dream_text(meta: ImageMeta) -> str:
    """The `Dream` chunk as InvokeAI 2.2.5's `Args.parse_cmd` reads it: its samplers and switches only, LoRA tags
    out of the prompt, a grid's -g, --karras_max on k_ lines; with the hires fix, -W/-H are the final size (its
    meaning of --hires_fix). The whole line is in `parameters` (Dreamshell) and sd-metadata."""
    r = meta.request
    sampler, karras_max = invokeai2_sampler(r)
    values = {f: getattr(r, f) for f in INVOKEAI2_FIELDS}
    values.update(sampler=sampler, grid=r.grid or meta.image_type == "grid")
    if r.hires_fix and r.width and r.height:
        values["width"], values["height"] = hires.target_size(r.width, r.height, r.hires_scale or hires.DEFAULT_SCALE)
    text = format_request(DreamRequest(prompt=_without_loras(r.prompt), **values))
    return text + (f" --karras_max {karras_max}" if karras_max is not None else "")


def _without_loras(prompt: str) -> str:
    """The prompt without its `<lora:...>` tags (InvokeAI 2.x reads `<lora` `:` `>` as a blend); 'a <lora:x>, b'
    becomes 'a, b'."""
    if not LORA_TAG.search(prompt):
        return prompt
    text = re.sub(r"\s*\0\s*(?=[,.;)\]]|$)", "", LORA_TAG.sub("\0", prompt))
    return re.sub(r"\s+", " ", text.replace("\0", " ")).strip()


def _escape_colons(text: str) -> str:
    """Literal colons as `\\:` (a bare one is a sub-prompt weight); `<lora:NAME:W>` tags are left as they are."""
    tags = [m.group(0) for m in LORA_TAG.finditer(text)]
    escaped = re.sub(r"(?<!\\):", r"\\:", LORA_TAG.sub("\ue100", text))
    for tag in tags:
        escaped = escaped.replace("\ue100", tag, 1)
    return escaped


def _prompt_list(prompt: str) -> list[dict]:
    """[{prompt, weight}] with literal colons escaped, the negative in [brackets] on the first one; LoRA tags
    stay in the sub-prompt they stand in."""
    tags = [m.group(0) for m in LORA_TAG.finditer(prompt)]
    hidden = LORA_TAG.sub(lambda m: "\ue100", prompt)

    def show(text: str) -> str:
        for tag in tags:
            text = text.replace("\ue100", tag, 1)
        return text
    try:
        parts = split_prompt(hidden)
        _, negative = extract_negative(hidden)
    except PromptError:
        return [{"prompt": prompt, "weight": 1.0}]
    if parts.combine:   # A1111's AND: InvokeAI 2.x has none, so its text as it is
        return [{"prompt": prompt, "weight": 1.0}]
    neg = f" [{negative}]" if negative else ""
    return [{"prompt": show(_escape_colons(t) + (neg if i == 0 else "")), "weight": w}
            for i, (t, w) in enumerate(parts.positive)]


def sd_metadata(meta: ImageMeta) -> dict:
    """InvokeAI's sd-metadata JSON as InvokeAI 2.x's `metadata_loads` reads it; a grid is `images`."""
    r = meta.request
    sampler, karras_max = invokeai2_sampler(r)
    image = {
        "type": meta.image_type if meta.image_type != "grid" else "img2img" if r.init_img else "txt2img",
        "prompt": _prompt_list(_without_loras(r.prompt)),
        "seed": r.seed, "steps": r.steps, "cfg_scale": r.cfg_scale, "sampler": sampler or r.sampler, "width": r.width,
        "height": r.height, "variations": [{"seed": s, "weight": w} for s, w in r.with_variations],
        "postprocessing": list(meta.postprocessing) or None, "strength": r.strength, "init_img": r.init_img,
        "init_mask": r.init_mask, "fit": r.fit, "seamless": r.seamless,
        "upscale": [r.upscale.factor, r.upscale.strength] if r.upscale else None,
    }
    schedule = r.schedule or (find_sampler(r.sampler).schedule if sampler and find_sampler(r.sampler) else None)
    if schedule:
        image["schedule"] = schedule
    if karras_max is not None:
        image["karras_max"] = karras_max
    image.update(_sd_extras(meta))
    data = {"model": "stable diffusion", "model_id": r.model, "model_hash": meta.model_hash,
            "app_id": APP_ID, "app_version": meta.app_version, "dreamshell": meta.command}
    if meta.image_type == "grid" and r.seed is not None:
        data["images"] = [dict(image, seed=r.seed + i) for i in range(r.iterations)]
    else:
        data["image"] = image
    return data


def _sd_extras(meta: ImageMeta) -> dict:
    """Clip skip, VAE, hashes and the hires fix in the sd-metadata image dict. `hires_fix` is InvokeAI 2.x's
    own key, and with it InvokeAI's `width`/`height` are the final size (its first pass is near the model's
    size), so they are the final size here too and `first_pass_width`/`first_pass_height` hold ours. The
    other keys are no InvokeAI 2.x `Args` name: `metadata_loads` keeps them on its Namespace, unread."""
    r, x = meta.request, meta.extras
    out: dict = {}
    try:
        tags = split_prompt(r.prompt).loras
    except PromptError:
        tags = ()
    if tags:
        out["loras"] = [{"name": t.name, "weight": t.weight} for t in tags]
    if r.rng:
        out["rng"] = r.rng
    if r.ensd:
        out["ensd"] = r.ensd
    if r.clip_skip is not None:
        out["clip_skip"] = r.clip_skip
    if r.guidance is not None:
        out["guidance"] = r.guidance            # FLUX.1 dev's distilled guidance (invokeai_metadata's name)
    if r.cfg_rescale is not None:
        out["cfg_rescale"] = r.cfg_rescale
    if r.vae:
        out["vae"] = r.vae
    if x.vae and x.vae[1]:
        out["vae_hash"] = x.vae[1]
    if r.decoder:   # ours (issue 17): the tiny decoder changes pixels; no InvokeAI 2.x key for it
        out["decoder"] = r.decoder
    if x.loras:
        out["lora_hashes"] = {name: digest for name, _, digest in x.loras}
    if x.embeddings:
        out["ti_hashes"] = dict(x.embeddings)
    if r.hires_fix:
        scale = r.hires_scale or hires.DEFAULT_SCALE
        if r.width and r.height:
            out["width"], out["height"] = hires.target_size(r.width, r.height, scale)
            out["first_pass_width"], out["first_pass_height"] = r.width, r.height
        out.update(hires_fix=True, hires_scale=scale, hires_steps=r.hires_steps or r.steps,
                   hires_strength=r.hires_strength or hires.DEFAULT_STRENGTH,
                   hires_upscaler=r.hires_upscaler or hires.DEFAULT_UPSCALER)
    return out


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
        if name == "--karras_max" and len(values) == 1 and values[0].isdigit():
            b.karras_max = int(values[0])    # the schedule of a k_ sampler (invokeai2_karras_schedule)
            continue
        what = next((w for s, w in UNSUPPORTED.items() if name == s), "not a dreamshell switch")
        b.drop(" ".join([name, *values]) + f" ({what})")
    return kept


def _version(text) -> tuple[int, int] | None:
    found = re.search(r"(\d+)\.(\d+)", str(text or ""))
    return (int(found.group(1)), int(found.group(2))) if found else None


def invokeai2_karras_schedule(b: Builder, app_id: str, app_version: str) -> None:
    """InvokeAI 2.1-2.2 ran its k_ samplers on Karras sigmas below `--karras_max` steps (default 30) and
    on the model's own (uniform) sigmas from there (InvokeAI 2.2 `ldm/models/diffusion/ksampler.py`); a
    --karras_max on the line has that meaning whichever tool wrote it."""
    version = _version(app_version)
    sampler = b.values.get("sampler") or ""
    given = getattr(b, "karras_max", None)
    invokeai2 = "invoke" in app_id.lower() and bool(version) and (2, 1) <= version < (3, 0)
    if not sampler.startswith("k_") or b.values.get("schedule") or not (invokeai2 or given is not None):
        if given is not None:
            b.drop(f"--karras_max {given} (InvokeAI 2.x's: only for its k_ samplers on their own schedule)")
        return
    limit = 30 if given is None else given
    steps = b.values.get("steps", 50)
    b.values["schedule"] = "karras" if steps < limit else "uniform"
    by = f"InvokeAI {app_version}" if invokeai2 else "InvokeAI 2.x"
    b.note(f"--schedule {b.values['schedule']}: {by} ran {sampler} on "
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
    _dream_hires(b, values, app[0])
    b.values.update(values)
    invokeai2_karras_schedule(b, *app)
    return b.build(prompt)


_HIRES_FIELDS = ("hires_fix", "hires_scale", "hires_steps", "hires_strength", "hires_upscaler")


def _dream_hires(b: Builder, values: dict, app_id: str) -> None:
    """A Dream line's hires fix: ours as it is; with -I (which dreamshell's parser refuses: the hires fix starts
    from noise) or InvokeAI 2.x's (its -W/-H are the final size) dropped by name."""
    given = [f for f in _HIRES_FIELDS if f in values]
    if not given:
        return
    ours = any(f != "hires_fix" for f in given)    # a bare --hires_fix is InvokeAI 2.x's (ours write it so too)
    if values.get("init_img"):
        why = "dreamshell's hires fix starts from noise and cannot take -I; the init image is kept"
    elif not ours:
        size = f"{values['width']}x{values['height']}" if values.get("width") and values.get("height") else "-W x -H"
        why = (f"InvokeAI 2.x's: {size} is the final size, made from a first pass near the model's own size; "
               "for dreamshell's, give the first pass's -W/-H and --hires_scale")
    else:
        return
    tokens = []
    for sw in SWITCHES:
        if sw.field in given:
            tokens += [sw.spelling, *sw.format_value(values.pop(sw.field))]
    b.drop(" ".join(tokens) + f" ({why})")


# ----- reading sd-metadata

_SD_KNOWN = {"type", "prompt", "seed", "steps", "cfg_scale", "sampler", "width", "height", "variations",
             "postprocessing", "strength", "init_img", "init_mask", "fit", "seamless", "upscale", "schedule",
             "orig_hash", "step_number", "strength_steps", "init_image_path", "init_mask_path", "extra",
             "clip_skip", "vae", "vae_hash", "lora_hashes", "ti_hashes", "hires_fix", "hires_scale", "hires_steps",
             "hires_strength", "hires_upscaler", "first_pass_width", "first_pass_height", "guidance", "cfg_rescale",
             "karras_max", "loras", "rng", "ensd", "decoder"}


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
    data = load_json(text, "sd-metadata")
    image, images = _sd_image(data)
    app = str(data.get("app_id") or "")
    if app == APP_ID and isinstance(data.get("dreamshell"), str):    # ours: the exact line
        try:
            request = parse_request(data["dreamshell"])
        except ParseError as e:
            raise MetadataError(f"{source}: its dreamshell line cannot be read ({e})") from None
        if isinstance(request, DreamRequest):
            return Recipe(request, (), "dreamshell (sd-metadata)", _sd_read_extras(Builder(source), image, True))
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
    recorded = _sd_read_extras(b, image, app == APP_ID)
    if isinstance(image.get("karras_max"), int) and app != APP_ID:   # ours: the schedule key says it exactly
        b.karras_max = image["karras_max"]
    invokeai2_karras_schedule(b, app, str(data.get("app_version") or ""))
    if len(images) > 1:
        _grid(b, images)
    if data.get("model_id"):
        b.set("--model", data["model_id"], "model_id")
    for key in sorted(set(image) - _SD_KNOWN):
        if image[key] not in (None, False, 0, 0.0, "", [], {}):
            b.drop(f"{key}: {short(json.dumps(image[key]), 40)}")
    return b.build(" ".join([_sd_prompt(image.get("prompt")), *_sd_loras(b, image.get("loras"))]).strip(), recorded)


def _sd_loras(b: Builder, loras) -> list[str]:
    """Our `loras` list ([{name, weight}]: the prompt's `<lora:...>` tags, kept out of InvokeAI's prompt text)."""
    tags = []
    for lora in loras if isinstance(loras, list) else []:
        name, weight = (lora.get("name"), lora.get("weight", 1)) if isinstance(lora, dict) else (None, None)
        if not isinstance(name, str) or not isinstance(weight, (int, float)) or isinstance(weight, bool):
            b.drop(f"loras: {short(json.dumps(lora), 40)}")
            continue
        tags.append(f"<lora:{name}:{format_number(float(weight))}>")
    return tags


def _base_name(name: str) -> str:
    return re.split(r"[\\/]", name.rstrip("\\/"))[-1]


def _sd_read_extras(b: Builder, image: dict, ours: bool) -> RecipeExtras:
    """Clip skip, VAE and the hires fix of an sd-metadata image dict (ours: `_sd_extras`); InvokeAI 2.x's
    own `hires_fix` (width/height its final size) is named, not run. Returns the hashes it records."""
    if image.get("clip_skip") is not None:
        b.set("--clip_skip", image["clip_skip"], "clip_skip")
    for key in ("guidance", "cfg_rescale"):
        if image.get(key) is not None:
            b.set("--" + key, image[key], key)
    for key in ("rng", "ensd"):
        if image.get(key) not in (None, "", 0):
            b.set("--" + key, image[key], key)
    vae = image.get("vae")
    if vae:
        b.set("--vae", str(vae) if ours else _base_name(str(vae)), "vae")
    if image.get("decoder"):
        b.set("--decoder", str(image["decoder"]), "decoder")
    if image.get("hires_fix"):
        if image.get("init_img"):
            b.drop("hires_fix (dreamshell's hires fix starts from noise and cannot take an init image)")
        elif ours and image.get("first_pass_width") and image.get("first_pass_height"):
            b.size(image["first_pass_width"], image["first_pass_height"], "first pass size")
            b.values["hires_fix"] = True
            for key in ("hires_scale", "hires_steps", "hires_strength", "hires_upscaler"):
                if image.get(key) is not None:
                    b.set("--" + key, image[key], key)
        else:
            b.drop(f"hires_fix (InvokeAI 2.x's: {image.get('width')}x{image.get('height')} is the final size, made "
                   "from a first pass near the model's own size; for dreamshell's, give the first pass's -W/-H and "
                   "--hires_scale)")
    loras = image.get("lora_hashes") if isinstance(image.get("lora_hashes"), dict) else {}
    tis = image.get("ti_hashes") if isinstance(image.get("ti_hashes"), dict) else {}
    digest = str(image.get("vae_hash") or "")
    return RecipeExtras(tuple((str(k), 1.0, str(v)) for k, v in loras.items()),
                        tuple((str(k), str(v)) for k, v in tis.items()),
                        (_base_name(str(vae)), digest) if vae else None)


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
    """InvokeAI 3.x-6.x `invokeai_metadata`: prompts, seed, steps, cfg, size, scheduler, model, LoRAs (as
    `<lora:NAME:W>` tags), clip skip, VAE and the high-resolution fix; the rest (refiner, control adapters,
    init image) named in the note."""
    data = load_json(text, "invokeai_metadata")
    if not isinstance(data, dict):
        raise MetadataError("invokeai_metadata is not a JSON object")
    version = data.pop("app_version", "")
    b = Builder(f"InvokeAI {version} invokeai_metadata".replace("  ", " "))
    prompt = one_line(str(data.pop("positive_prompt", "") or ""))
    if "[" in prompt or "]" in prompt:
        b.note("square brackets in the prompt became parentheses (in dreamshell [ ] is the negative prompt)")
        prompt = prompt.replace("[", "(").replace("]", ")")
    prompt = " ".join([_escape_colons(prompt), *_invoke3_loras(b, data.pop("loras", None))]).strip()
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
    model_data = data.pop("model", None)
    model = _model_name(model_data)
    if model:
        b.set("--model", model, "model")
    invoke3_controls(b, data)
    _invoke3_rest(b, data, model_data)
    return b.build(prompt)


def _invoke3_loras(b: Builder, loras) -> list[str]:
    """`loras` ([{model: {name, ...}, weight}], 3.x: [{lora: {model_name}, weight}]) as `<lora:NAME:W>` tags."""
    tags: list[str] = []
    names: list[str] = []
    for lora in loras if isinstance(loras, list) else []:
        if not isinstance(lora, dict):
            continue
        name = str(_model_name(lora.get("model") or lora.get("lora")) or "").strip()
        weight = lora.get("weight", 1)
        tag = f"<lora:{name}:{format_number(weight) if isinstance(weight, (int, float)) else weight}>"
        try:
            parsed = split_prompt(tag).loras
        except PromptError as e:
            b.drop(f"LoRA {short(name, 40)} (weight {short(weight, 10)}; {e})")
            continue
        if not parsed or parsed[0].name in names:
            b.drop(f"LoRA {short(name, 40)} (weight {short(weight, 10)}; " +
                   ("listed twice)" if parsed else "no name)"))
            continue
        names.append(parsed[0].name)
        tags.append(tag)
    return tags


_OPTIMAL_SIZE = {"sd-1": 512, "sd-2": 512, "sdxl": 1024}   # InvokeAI's getOptimalDimension (optimalDimension.ts)


def _hrf_first_pass(optimal: int, width: int, height: int) -> tuple[int, int]:
    """InvokeAI's high-resolution fix first pass (frontend addHRF.ts calculateHrfRes): the model's area at the
    final aspect ratio, no side under half the model's size nor over the final one, multiples of 8."""
    aspect = width / height
    least = optimal // 2
    if aspect > 1:
        h = max(least, (optimal * optimal / aspect) ** 0.5)
        w = h * aspect
    else:
        w = max(least, (optimal * optimal * aspect) ** 0.5)
        h = w / aspect
    w, h = min(width, w), min(height, h)
    return int(int(w) / 8 + 0.5) * 8, int(int(h) / 8 + 0.5) * 8        # JavaScript's Math.round


def _invoke3_hrf(b: Builder, data: dict, model_data) -> None:
    """InvokeAI 3-4's high-resolution fix: width/height are the final size; the first pass is near the
    model's own size; the second pass denoises from 1 - hrf_strength over the same steps."""
    enabled, method = data.pop("hrf_enabled", None), data.pop("hrf_method", None)
    strength = data.pop("hrf_strength", None)
    if not enabled:
        return
    what = f"high-resolution fix (hrf_method {method}, hrf_strength {strength})"
    base = ""
    if isinstance(model_data, dict):
        base = str(model_data.get("base") or model_data.get("base_model") or "")
    width, height = b.values.get("width"), b.values.get("height")
    if base not in _OPTIMAL_SIZE or not width or not height:
        b.drop(f"{what} (its first pass depends on the model's base, {short(base or 'not recorded', 20)})")
        return
    first = _hrf_first_pass(_OPTIMAL_SIZE[base], width, height)
    try:
        scale = b.hires_scale(first, (width, height), f"InvokeAI's final size {width}x{height}",
                              "InvokeAI resizes to it")
        values = {"hires_scale": b.convert("--hires_scale", format_number(scale)),
                  "hires_strength": b.convert("--hires_strength", strength if strength is not None else 0.45)}
    except (ValueError, TypeError) as e:
        b.drop(f"{what} ({e})")
        return
    steps = b.values.get("steps")
    if steps:
        values["hires_steps"] = max(1, round(steps * values["hires_strength"]))
        b.note(f"InvokeAI's hires pass ran about {values['hires_steps']} of {steps} steps (from "
               f"{format_number(round(1 - values['hires_strength'], 4))} of the way): --hires_steps "
               f"{values['hires_steps']}")
    if str(method).lower() == "esrgan":
        upscaler = "esrgan"
    else:
        upscaler = "lanczos"
        b.note(f"hrf_method {short(method, 20)} (InvokeAI resizes the decoded image) read as lanczos")
    b.values["width"], b.values["height"] = first
    b.values.update(hires_fix=True, hires_upscaler=upscaler, **values)


_ENCODER_KEYS = ("t5_encoder", "clip_embed_model", "clip_l_model", "clip_g_model")   # InvokeAI 5-6 FLUX / SD 3


def _invoke_families(b: Builder, data: dict, model_data=None) -> None:
    """InvokeAI 5-6's FLUX and SD 3 keys (frontend buildFLUXGraph / buildSD3Graph): `guidance` (FLUX.1 dev's
    distilled guidance), `cfg_rescale_multiplier`, and the text encoder models, which are the models file's here."""
    if data.get("guidance") is not None:
        guidance = data.pop("guidance")
        if "schnell" in str(_model_name(model_data) or "").lower():   # InvokeAI writes it for schnell too
            b.note(f"guidance {short(guidance, 10)} left out: FLUX.1 schnell has no distilled guidance")
        else:
            b.set("--guidance", guidance, "guidance")
    rescale = data.pop("cfg_rescale_multiplier", None)
    if rescale:
        b.set("--cfg_rescale", rescale, "cfg_rescale_multiplier")
    named = [f"{key} {short(_model_name(data.pop(key)), 40)}" for key in _ENCODER_KEYS if data.get(key)]
    if named:
        b.note(f"InvokeAI's text encoders ({'; '.join(named)}) are the ones the models file names for the model here")


def _invoke3_rest(b: Builder, data: dict, model_data=None) -> None:
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
        if data.pop("hrf_enabled", None):
            b.drop("high-resolution fix (dreamshell's starts from noise)")
    _invoke3_hrf(b, data, model_data)
    _invoke_families(b, data, model_data)
    skip = data.pop("clip_skip", None)
    if isinstance(skip, int) and not isinstance(skip, bool) and skip > 0:
        if b.set("--clip_skip", skip + 1, "clip_skip"):
            b.note(f"clip_skip {skip} (InvokeAI counts the layers skipped) read as --clip_skip {skip + 1} "
                   "(A1111's numbering)")
    elif skip:
        b.drop(f"clip_skip: {short(skip, 20)}")
    vae = data.pop("vae", None)
    name = _model_name(vae)
    if name:
        b.set("--vae", _base_name(str(name)), "vae")
    for key, value in data.items():
        if key == "rand_device" or value in (None, False, 0, "", [], {}):
            continue
        b.drop(f"{key}: {short(json.dumps(value), 40)}")


# ----- InvokeAI 3+ control adapters (issue 20): core_metadata's `controlnets`, `t2iAdapters` (invokeai/app/invocations/
# metadata.py ControlNetMetadataField, T2IAdapterMetadataField) as --control; the image is a gallery name, looked for
# beside the fetched image (formats/__init__.py), and named in a note when it is not there


def _image_name(field) -> str:
    return str(field.get("image_name") or "") if isinstance(field, dict) else ""


def invoke3_controls(b: Builder, data: dict) -> None:
    from ...line.control import ControlError, ControlSpec, check_control, default_preprocessor
    units = [("controlnets", "control_model", "control_weight", "ControlNet"),
             ("t2iAdapters", "t2i_adapter_model", "weight", "T2I-Adapter")]
    for key, model_key, weight_key, label in units:
        for item in data.pop(key, None) or []:
            if not isinstance(item, dict):
                continue
            name = _base_name(str(_model_name(item.get(model_key)) or "")).strip()
            processed, image = _image_name(item.get("processed_image")), _image_name(item.get("image"))
            weight = item.get(weight_key, 1)
            if isinstance(weight, list):
                b.note(f"{label} {short(name, 40)}: per-step weights {short(json.dumps(weight), 40)} read as the "
                       f"first, {short(weight[0] if weight else 1, 10)}")
                weight = weight[0] if weight else 1
            if not name or not (processed or image):
                b.drop(f"{label} {short(name or '(no model)', 40)} (no model or image recorded)")
                continue
            # the processed image is the map the model saw; without it the source image goes through the default
            pre = "none" if processed else None
            if pre == default_preprocessor(name):
                pre = None
            try:
                spec = ControlSpec(name, processed or image, float(weight), float(item.get("begin_step_percent", 0)),
                                   float(item.get("end_step_percent", 1)), pre)
                check_control(spec)
            except (ControlError, TypeError, ValueError) as e:
                b.drop(f"{label} {short(name, 40)} ({e})")
                continue
            if not processed:
                b.note(f"{label} {short(name, 40)}: InvokeAI recorded the source image, not its processed map: "
                       f"dreamshell's {spec.pre()} preprocessor makes the map")
            mode = str(item.get("control_mode") or "balanced")
            if mode != "balanced":
                b.drop(f"{label} {short(name, 40)} control_mode {short(mode, 20)} (dreamshell runs balanced)")
            resize = str(item.get("resize_mode") or "just_resize")
            if resize != "crop_resize":
                b.note(f"{label} {short(name, 40)}: resize_mode {short(resize, 20)} read as crop and resize (the "
                       "same when the image has the line's aspect ratio)")
            b.values["control"] = b.values.get("control", ()) + (spec,)
    for item in data.pop("ipAdapters", None) or []:
        if isinstance(item, dict):
            b.drop(f"IP-Adapter {short(_model_name(item.get('ip_adapter_model')) or '?', 40)} (not supported)")
