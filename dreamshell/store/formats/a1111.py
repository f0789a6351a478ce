"""AUTOMATIC1111's infotext (`parameters` in PNG, EXIF UserComment in JPEG/WebP): written for every
image and read from A1111, Forge, CivitAI and the rest. Reader: A1111 `modules/infotext_utils.py`
`parse_generation_parameters`; samplers: `modules/sd_samplers.py get_sampler_and_scheduler`.

LoRAs, embeddings, clip skip, VAE and the hires fix as A1111 1.10 writes them: `processing.py`
`create_infotext` (key order; `Clip skip` only above 1; `Size` the first pass; `Denoising strength` the
hires pass's), `StableDiffusionProcessingTxt2Img.init` (`Hires upscale`/`Hires resize`, `Hires steps`,
`Hires upscaler`), `extensions-builtin/Lora/extra_networks_lora.py` (`Lora hashes`: the tag's name without
':' and ',', 12 hex), `sd_hijack_clip.py` (`TI hashes`), `sd_vae.py` (`VAE` file name, `VAE hash` 10 hex)."""

from __future__ import annotations

import json
import math
import re

from ...line import hires, rng
from ...line.parser import ParseError, parse_request
from ...line.prompt import LORA_TAG, PromptError, extract_negative, split_prompt
from ...line.request import DreamRequest
from ...line.samplers import effective_schedule, find_sampler, find_schedule
from ...line.switches import SwitchError, format_number
from ...weights.library import RecipeExtras
from .common import Builder, ImageMeta, MetadataError, Recipe, short
from .prompts import _to_a1111_text, a1111_to_dreamshell, dreamshell_to_a1111

# key: value pairs of A1111's last line; values may be JSON-quoted
_PARAM = re.compile(r'\s*(\w[\w \-/+]*):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_SIZE = re.compile(r"^\s*(\d+)\s*x\s*(\d+)\s*$")
_NAME_SYMBOLS = str.maketrans("", "", ":,")   # what A1111 takes out of a name in `Lora hashes`/`TI hashes`

# ----- writing


def _value(value: str) -> str:
    return json.dumps(value, ensure_ascii=False) if any(c in value for c in ',:\n"') else value


def _num(x) -> str:
    return format_number(x) if x is not None else ""


def _sampler_keys(r: DreamRequest) -> list[tuple[str, str]]:
    """`Sampler` and `Schedule type` as A1111 >= 1.9 runs them: written explicitly, since A1111's
    Automatic is Karras for DPM++ 2M and others, while dreamshell's default is the model's own
    schedule (diffusers' `leading` spacing, A1111's `DDIM` schedule type)."""
    sampler = find_sampler(r.sampler or "")
    if sampler is None:
        return [("Sampler", str(r.sampler))]
    keys = [("Sampler", sampler.a1111 or sampler.name)]
    if r.timesteps:   # Forge's Turbo schedule runs trailing timesteps exactly; the list itself is `Timesteps`
        if not sampler.timesteps and list(r.timesteps) == trailing_timesteps(len(r.timesteps)):
            keys.append(("Schedule type", "Turbo"))
        return keys
    if sampler.timesteps and not r.schedule:
        return keys
    if sampler.name == "LCM" and not r.schedule:
        # A1111's LCM (sd_samplers_lcm.py) at SGM Uniform runs t = 999, 754, 509, 264 at 4 steps, which its
        # denoiser rounds to the 50 LCM timesteps: the nearest to diffusers' 999, 759, 499, 259 (its
        # Automatic runs 999, 672, 346, 19)
        return keys + [("Schedule type", "SGM Uniform")]
    schedule = effective_schedule(sampler, r.schedule)
    keys.append(("Schedule type", schedule.a1111 if schedule else "DDIM"))
    return keys


def trailing_timesteps(n: int) -> list[int]:
    """diffusers' trailing spacing at n steps (999, 749, 499, 249 at 4), as Forge's Turbo schedule makes them
    up to 15 steps (tests/test_presets.py)."""
    return [round(1000 - i * 1000 / n) - 1 for i in range(n)] if 0 < n <= 15 else []


def _step_keys(r: DreamRequest) -> list[tuple[str, str]]:
    """Explicit timesteps (`Timesteps`, ours: no A1111 or Forge version reads it; it shows in PNG Info and
    dreamshell's !fetch reads it) and the step's eta as A1111 names it (`Eta DDIM` for DDIM; `Eta` otherwise,
    which the A1111 TCD extension ignores: it runs gamma 0.3)."""
    keys = []
    if r.timesteps:
        keys.append(("Timesteps", ",".join(str(t) for t in r.timesteps)))
    if r.eta is not None:
        sampler = find_sampler(r.sampler or "")
        keys.append(("Eta DDIM" if sampler and sampler.name == "ddim" else "Eta", _num(r.eta)))
    return keys


def _upscale_keys(r: DreamRequest) -> list[tuple[str, str]]:
    spec = r.upscale
    keys = [("Postprocess upscale by", _num(spec.factor)),
            ("Postprocess upscaler", "R-ESRGAN 2x+" if spec.factor == 2 else "R-ESRGAN 4x+")]
    if spec.strength < 1:   # ours: strength*ESRGAN + (1-strength)*Lanczos; A1111 blends upscaler 2 by visibility
        keys += [("Postprocess upscaler 2", "Lanczos"),
                 ("Postprocess upscaler 2 visibility", _num(round(1 - spec.strength, 6)))]
    return keys


def _hash_list(pairs) -> str:
    """`name: hash, name2: hash` as A1111 writes `Lora hashes` and `TI hashes` (':' and ',' taken out of names)."""
    named: dict[str, str] = {}
    for name, digest in pairs:
        if digest:
            named.setdefault(name.translate(_NAME_SYMBOLS), digest)
    return ", ".join(f"{k}: {v}" for k, v in named.items())


def _vae_keys(meta: ImageMeta) -> list[tuple[str, str]]:
    """`VAE hash` (10 hex of the file's sha256; none for a diffusers folder) and `VAE` (the file's name)."""
    r, vae = meta.request, meta.extras.vae
    if vae:
        return ([("VAE hash", vae[1])] if vae[1] else []) + [("VAE", vae[0])]
    if r.vae:
        return [("VAE", re.split(r"[\\/]", r.vae.rstrip("/\\"))[-1] or r.vae)]
    return []


def _noise_keys(r: DreamRequest) -> list[tuple[str, str]]:
    """`ENSD` and `RNG` where A1111 1.10's create_infotext writes them (after `Clip skip`). `ENSD` whenever it is
    set (A1111 writes it only for its ancestral samplers, but its seed + ENSD stream feeds every later draw);
    no `RNG` for GPU noise, which A1111 assumes when the key is missing."""
    keys = [("ENSD", str(r.ensd))] if r.ensd else []
    source = r.rng or rng.DEFAULT_RNG
    return keys + ([] if source == "gpu" else [("RNG", rng.a1111_rng(source))])


def _decoder_keys(r: DreamRequest) -> list[tuple[str, str]]:
    """`VAE Decoder: TAESD` for a tiny decoder, as A1111 1.6+ writes its `sd_vae_decode_method` setting (processing.py
    `process_images_inner`; nothing when it is Full). A1111 names no file: `--decoder NAME` is in the Dreamshell key."""
    return [("VAE Decoder", "TAESD")] if r.decoder and r.decoder != "vae" else []


def _hires_keys(r: DreamRequest) -> list[tuple[str, str]]:
    """The second pass as A1111's txt2img writes it (`processing.py` StableDiffusionProcessingTxt2Img.init and
    calculate_target_resolution); `Hires steps` always, though A1111 leaves it out when it is 0 (= Steps)."""
    keys = [("Hires upscale", _num(r.hires_scale or hires.DEFAULT_SCALE))]
    if r.hires_steps or r.steps:
        keys.append(("Hires steps", str(r.hires_steps or r.steps)))
    keys.append(("Hires upscaler", hires.UPSCALERS[r.hires_upscaler or hires.DEFAULT_UPSCALER][0]))
    return keys


def a1111_parameters(meta: ImageMeta) -> str:
    """A1111's infotext: prompt (with its `<lora:...>` tags, as A1111 keeps them), optional 'Negative prompt:'
    line, then 'Steps: ...' key/values in the order of A1111's `processing.create_infotext`; the exact
    dreamshell line is the last key, `Dreamshell`. `Size` is the first pass of a hires fix."""
    r = meta.request
    positive, negative = extract_negative(r.prompt)
    moved = [m.group(0) for m in LORA_TAG.finditer(negative)]   # dreamshell applies a tag anywhere; A1111 not
    if moved:                                                   # in the negative prompt
        negative = re.sub(r"\s+", " ", LORA_TAG.sub(" ", negative)).strip()
        positive = " ".join([positive, *moved])
    try:
        prompt = dreamshell_to_a1111(positive, r.skip_normalize)
    except (ValueError, IndexError):
        prompt = positive
    keys = [("Steps", str(r.steps)), *_sampler_keys(r), ("CFG scale", _num(r.cfg_scale))]
    if r.guidance is not None:     # Forge writes it after CFG scale for FLUX.1 dev (processing.create_infotext)
        keys.append(("Distilled CFG Scale", _num(r.guidance)))
    keys += [("Seed", str(r.seed)), ("Size", f"{r.width}x{r.height}")]
    if meta.model_hash:
        keys.append(("Model hash", meta.model_hash[:10]))
    if r.model:
        keys.append(("Model", r.model))
    keys += _vae_keys(meta)
    keys += _decoder_keys(r)
    if r.with_variations:
        seed, weight = r.with_variations[0]
        keys += [("Variation seed", str(seed)), ("Variation seed strength", _num(weight))]
    if r.init_img and r.strength is not None:
        keys.append(("Denoising strength", _num(r.strength)))
    elif r.hires_fix:
        keys.append(("Denoising strength", _num(r.hires_strength or hires.DEFAULT_STRENGTH)))
    if r.clip_skip and r.clip_skip > 1:
        keys.append(("Clip skip", str(r.clip_skip)))
    keys += _noise_keys(r)
    keys += _step_keys(r)
    if r.seamless:
        keys.append(("Tiling", "True"))
    keys += inpaint_area_keys(r)
    if r.hires_fix:
        keys += _hires_keys(r)
    if r.cfg_rescale:   # the CFG rescale extensions' key (sd-webui-neutral-prompt, CFG_Rescale_webui read it)
        keys.append(("CFG Rescale phi", _num(r.cfg_rescale)))
    loras = _hash_list((name, digest) for name, _, digest in meta.extras.loras)
    if loras:
        keys.append(("Lora hashes", loras))
    embeddings = _hash_list(meta.extras.embeddings)
    if embeddings:
        keys.append(("TI hashes", embeddings))
    keys += control_keys(meta)
    if r.upscale:
        keys += _upscale_keys(r)
    keys.append(("Dreamshell", meta.command))
    lines = [prompt]
    if negative:
        lines.append("Negative prompt: " + _to_a1111_text(negative.replace("\\:", ":")))
    lines.append(", ".join(f"{k}: {_value(v)}" for k, v in keys))
    return "\n".join(lines)


# ----- ControlNet units and Only masked (issue 20): A1111's ControlNet extension (Mikubill/sd-webui-controlnet
# internal_controlnet/args.py ControlNetUnit.infotext_fields and serialize; Forge's lib_controlnet/infotext.py) and
# A1111 1.10 processing.py StableDiffusionProcessingImg2Img.init (`Inpaint area`, `Masked area padding`)

CONTROL_FIELDS = ("Module", "Model", "Weight", "Resize Mode", "Processor Res", "Threshold A", "Threshold B",
                  "Guidance Start", "Guidance End", "Pixel Perfect", "Control Mode")
_THRESHOLDS = {"canny": (100, 200), "blur": (9.0, None), "tile": (1.0, None)}   # A1111's slider defaults


def control_unit(spec, model_hash: str, width: int, height: int) -> str:
    """One `ControlNet N` value as the extension serializes a unit (`Field: value, ...`; str() of each value)."""
    from ...line.control import PREPROCESSORS
    pre = spec.pre()
    a, b = _THRESHOLDS.get(pre, (None, None))
    model = f"{spec.model} [{model_hash}]" if model_hash else spec.model
    values = {"Module": PREPROCESSORS[pre][0], "Model": model, "Weight": str(float(spec.weight)),
              "Resize Mode": "Crop and Resize", "Processor Res": str(min(width, height)),
              "Threshold A": str(a) if a is not None else None, "Threshold B": str(b) if b is not None else None,
              "Guidance Start": str(float(spec.start)), "Guidance End": str(float(spec.end)),
              "Pixel Perfect": "True", "Control Mode": "Balanced"}
    return ", ".join(f"{k}: {v}" for k, v in values.items() if v is not None)


def control_keys(meta: ImageMeta) -> list[tuple[str, str]]:
    r = meta.request
    hashes = dict(meta.extras.controls)
    return [(f"ControlNet {i}", control_unit(spec, hashes.get(spec.model, ""), r.width or 512, r.height or 512))
            for i, spec in enumerate(r.control)]


def inpaint_area_keys(r: DreamRequest) -> list[tuple[str, str]]:
    if r.inpaint_area != "masked" or not r.init_mask:
        return []
    from ...line.control import DEFAULT_PADDING
    padding = DEFAULT_PADDING if r.inpaint_padding is None else r.inpaint_padding
    return [("Inpaint area", "Only masked"), ("Masked area padding", str(padding))]


def parse_unit(text: str) -> dict[str, str]:
    """A `ControlNet N` value -> {field: value}, as the extension's parse_unit splits it (`, ` then `: `)."""
    out = {}
    for item in text.split(","):
        key, sep, value = item.strip().partition(": ")
        if sep:
            out[key.strip()] = value.strip()
    return out


_MODEL_HASH = re.compile(r"^(.*?)\s*\[([0-9a-fA-F]{8,10})\]\s*$")


def _unit_keys(params: dict[str, str]) -> list[str]:
    return sorted((k for k in params if re.fullmatch(r"ControlNet \d+", k)), key=lambda k: int(k.split()[1]))


def _unit_model(unit: dict[str, str]) -> tuple[str, str]:
    """(model name, hash) of a unit's `Model: name [hash]`."""
    model = unit.get("Model", "None")
    m = _MODEL_HASH.match(model)
    return (m.group(1), m.group(2)) if m else (model.strip(), "")


def recorded_controls(params: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """The (model, hash) of each `ControlNet N` unit, for the check against the controlnets folder."""
    pairs = (_unit_model(parse_unit(params[k])) for k in _unit_keys(params))
    return tuple((name, digest) for name, digest in pairs if name not in ("", "None"))


def read_control_units(b: Builder, params: dict[str, str]) -> None:
    """Each `ControlNet N` unit named in a note: A1111 does not record the control image, so the line cannot
    take it; the note gives the --control to add."""
    from ...line.control import A1111_MODULES, ControlSpec, default_preprocessor, format_control
    for key in _unit_keys(params):
        unit = parse_unit(params.pop(key))
        model, _ = _unit_model(unit)
        module = unit.get("Module", "none")
        if model in ("", "None"):
            b.drop(f"{key} (module {short(module, 30)}, no model)")
            continue
        pre = A1111_MODULES.get(module)
        try:
            weight = float(unit.get("Weight", 1))
            start, end = float(unit.get("Guidance Start", 0)), float(unit.get("Guidance End", 1))
        except ValueError:
            weight, start, end = 1.0, 0.0, 1.0
        shown = format_control(ControlSpec(model, "IMAGE", weight, start, end,
                                           pre if pre and pre != default_preprocessor(model) else None))
        how = "" if pre else f"; dreamshell cannot run its module {short(module, 30)}: give the map itself as IMAGE"
        if not pre and default_preprocessor(model) != "none":
            shown = format_control(ControlSpec(model, "IMAGE", weight, start, end, "none"))
        b.drop(f"{key}: {short(module, 30)} with {short(model, 60)} (A1111 does not record the control image: add "
               f"--control {shown}{how})")


def read_inpaint_area(b: Builder, params: dict[str, str]) -> None:
    """`Inpaint area: Only masked` with `Masked area padding` (A1111 1.10), or the older label `Only masked padding,
    pixels`, whose comma A1111's own key pattern splits (it reads as `pixels: N`): noted, since A1111 records
    neither the init image nor the mask."""
    area = params.pop("Inpaint area", None)
    if area is None or area.strip() == "Whole picture":
        return
    padding = params.pop("Masked area padding", None) or params.pop("Only masked padding, pixels", None) \
        or params.pop("pixels", None)
    pad = f" --inpaint_padding {padding.strip()}" if padding else ""
    b.drop(f"Inpaint area: {short(area, 20)} (A1111 records neither the image nor the mask: add -I IMAGE -M MASK "
           f"--inpaint_area masked{pad})")


# ----- reading


def parse_a1111(text: str) -> tuple[str, str, dict[str, str]]:
    """(prompt, negative prompt, {key: value}) as A1111's parse_generation_parameters reads them."""
    *lines, last = text.strip().split("\n")
    if len(_PARAM.findall(last)) < 3:
        lines.append(last)
        last = ""
    prompt, negative, in_negative = [], [], False
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    last, spans = _hide_json_values(last)
    params = {}
    for key, value in _PARAM.findall(last):
        value = value.strip()
        if value in spans:
            value = spans[value]
        elif value.startswith('"') and value.endswith('"'):
            try:
                value = json.loads(value)
            except ValueError:
                pass
        params[key.strip()] = str(value)
    return "\n".join(prompt).strip(), "\n".join(negative).strip(), params


_JSON_VALUE = re.compile(r'(?:^|,)\s*\w[\w \-/+]*:\s*(?=[\[{])')


def _hide_json_values(last: str) -> tuple[str, dict[str, str]]:
    """The last line with each unquoted JSON list or object value (CivitAI's `Civitai resources: [{...}, ...]`,
    `Hashes: {...}`) put aside whole, as A1111's own reader, which cuts them at their first comma, does not."""
    spans: dict[str, str] = {}
    out, pos, decoder = [], 0, json.JSONDecoder()
    for m in _JSON_VALUE.finditer(last):
        if m.start() < pos:
            continue
        try:
            _, end = decoder.raw_decode(last, m.end())
        except ValueError:
            continue
        if last[end:].lstrip()[:1] not in ("", ","):
            continue
        marker = f"\0{len(spans)}"
        spans[marker] = last[m.end():end]
        out += [last[pos:m.end()], marker]
        pos = end
    return "".join(out) + last[pos:], spans


def _version(text: str | None) -> tuple[int, int] | None:
    found = re.findall(r"v?(\d+)\.(\d+)", text or "")
    return (int(found[-1][0]), int(found[-1][1])) if found else None


def _sampler(b: Builder, params: dict[str, str]) -> None:
    """Sampler and Schedule type with A1111's meaning (Automatic, combined names, version)."""
    name = params.pop("Sampler", "")
    label = params.pop("Schedule type", "")
    if not name:
        return
    sampler = find_sampler(name)
    if sampler is None:
        b.drop(f"Sampler: {short(name)} (unknown to dreamshell)")
        return
    schedule = sampler.schedule
    if schedule is None and label:
        found = find_schedule(label)
        if found is None:
            b.drop(f"Schedule type: {short(label)} (unknown to dreamshell)")
        schedule = found.name if found else None
    if schedule is None and not label:
        version = _version(params.get("Version"))
        # before 1.9 a plain name ran on the model's own (uniform) sigmas; since, "Automatic"
        schedule = "uniform" if version and version < (1, 9) else "automatic"
    base = find_sampler(sampler.a1111 or sampler.name) if sampler.schedule else sampler
    if base.timesteps:
        if label and schedule not in ("automatic", None) and not (base.name == "ddim" and schedule == "ddim"):
            b.drop(f"Schedule type: {label} (A1111 ignores it for {base.a1111})")
        # A1111's DDIM sampler walks the timesteps of its DDIM schedule type (dreamshell's --schedule ddim)
        schedule = "ddim" if base.name == "ddim" else None
    else:
        resolved = effective_schedule(base, schedule)
        schedule = resolved.name if resolved else None
    b.values["sampler"] = base.name
    if schedule:
        b.values["schedule"] = schedule
    _steps_and_eta(b, params, base, label)


def _steps_and_eta(b: Builder, params: dict[str, str], sampler, label: str) -> None:
    """`Timesteps` (ours) and `Eta DDIM` / `Eta` for a sampler that takes an eta (DDIM, TCD)."""
    text = params.pop("Timesteps", None)
    if text is not None and b.set("--timesteps", text.strip().strip('"'), "Timesteps"):
        count = len(b.values["timesteps"])
        if b.values.get("steps", count) != count:
            b.note(f"Steps: {b.values['steps']} read as {count}, the count of Timesteps")
        b.values["steps"] = count
        schedule = b.values.pop("schedule", None)
        if label and not (schedule == "turbo" and list(b.values["timesteps"]) == trailing_timesteps(count)):
            b.note(f"Schedule type: {short(label)} left out: the image names its Timesteps")
    key = "Eta DDIM" if sampler.name == "ddim" else "Eta"
    if key in params and sampler.eta is not None:
        b.set("--eta", params.pop(key), key)


# Hires keys A1111 writes only when the hires pass differs from the first (processing.py); dreamshell's hires pass
# runs with the first pass's: key -> (the first pass's key, A1111's "same" value, what is used here)
_SAME_AS_FIRST = {
    "Hires sampler": ("Sampler", "Use same sampler", "sampler"),
    "Hires schedule type": ("Schedule type", "Use same scheduler", "schedule"),
    "Hires checkpoint": ("Model", "Use same checkpoint", "model"),
    "Hires CFG Scale": ("CFG scale", "", "CFG scale"),
    "Hires Distilled CFG Scale": ("Distilled CFG Scale", "", "distilled guidance"),
    "Hires prompt": ("Prompt", "", "prompt"),
    "Hires negative prompt": ("Negative prompt", "", "negative prompt"),
}


def _same(value: str, first: str | None, same: str) -> bool:
    value = value.strip()
    if value in ("", same) or first is None:
        return value in ("", same)
    if value == first.strip() or value.startswith(first.strip() + " ["):    # Hires checkpoint: 'name [hash]'
        return True
    try:
        return float(value) == float(first)
    except ValueError:
        return False


_ESRGAN_FAMILY = re.compile(r"esrgan|^\d+x[-_ ]|ultrasharp|remacri|animesharp|nmkd|siax|foolhardy|4x\+|2x\+", re.I)


def hires_upscaler(name: str) -> tuple[str, str | None]:
    """Our hires upscaler for an A1111 `Hires upscaler` name, and a note when it is not the same one
    (A1111: `shared.latent_upscale_modes`, `modules/upscaler.py`, `images.resize_image`)."""
    name = name.strip()
    found = hires.find_upscaler(name)
    if found:
        return found, None
    low = name.lower()
    if low.startswith("latent"):
        return "latent", f"Hires upscaler: {short(name)} read as latent (A1111's plain Latent: bilinear)"
    if low == "none":
        return "lanczos", "Hires upscaler: None (A1111 then resizes the image with Lanczos) read as lanczos"
    if low == "nearest":
        return "lanczos", "Hires upscaler: Nearest (a nearest-neighbour resize) read as lanczos"
    kind = "an ESRGAN-family model" if _ESRGAN_FAMILY.search(name) else "an image upscaler dreamshell lacks"
    return "esrgan", f"Hires upscaler: {short(name)} ({kind}) read as esrgan (Real-ESRGAN 4x+)"


def _old_first_pass(width: int, height: int) -> tuple[int, int]:
    """A1111's `old_hires_fix_first_pass_dimensions`: about 512x512 pixels, sides in multiples of 64."""
    scale = math.sqrt(512 * 512 / (width * height))
    return math.ceil(scale * width / 64) * 64, math.ceil(scale * height / 64) * 64


def _hires_scale(b: Builder, hr: dict[str, str]) -> float | None:
    """The --hires_scale of `Hires upscale`, `Hires resize` or the old `First pass size`; None when the
    first pass's size is unknown."""
    w, h = b.values.get("width"), b.values.get("height")
    if w is None or h is None:
        return None
    first_pass = _SIZE.match(hr.get("First pass size", ""))
    resize = _SIZE.match(hr.get("Hires resize", ""))
    if first_pass:     # A1111's old hires fix (before Hires upscale): Size is the final size
        fw, fh = int(first_pass.group(1)), int(first_pass.group(2))
        if not fw or not fh:
            fw, fh = _old_first_pass(w, h)
        b.size(fw, fh, "First pass size")
        first = (b.values["width"], b.values["height"])
        b.note(f"First pass size: {first_pass.group(1)}x{first_pass.group(2)} (A1111's old hires fix, where Size "
               f"{w}x{h} is the final size) read as a first pass of {first[0]}x{first[1]}")
        return b.hires_scale(first, (w, h), f"the final size {w}x{h}", "A1111 cropped to it")
    if resize and (int(resize.group(1)) or int(resize.group(2))):
        rx, ry = int(resize.group(1)), int(resize.group(2))
        rx, ry = rx or ry * w // h, ry or rx * h // w
        return b.hires_scale((w, h), (rx, ry), f"Hires resize: {rx}x{ry}",
                             "A1111 upscales to cover it and crops the rest")
    text = hr.get("Hires upscale", "").strip()
    return float(text) if text else hires.DEFAULT_SCALE


def _hires_and_strength(b: Builder, params: dict[str, str], first: dict[str, str]) -> None:
    """A1111's hires fix (`Hires upscale`/`Hires resize`, `Hires steps`, `Hires upscaler`, `Denoising
    strength`) as --hires_fix with all its values; `Denoising strength` alone is img2img."""
    hr = {k: params.pop(k) for k in list(params) if k.startswith("Hires ") or k == "First pass size"}
    strength = params.pop("Denoising strength", None)
    if not hr:
        if strength:
            b.drop(f"Denoising strength: {strength} (img2img: A1111 does not record the init image; "
                   f"add -I PATH -f {strength})")
        return
    for key, (base, same, what) in _SAME_AS_FIRST.items():
        value = hr.pop(key, None)
        if value is not None and not _same(value, first.get(base), same):
            b.drop(f"{key}: {short(value, 40)} (dreamshell's hires pass uses the first pass's {what})")
    known = {k: hr.pop(k) for k in ("Hires upscale", "Hires resize", "First pass size", "Hires steps",
                                     "Hires upscaler") if k in hr}
    for key, value in hr.items():      # Forge's and others' (Hires Module 1, Hires Distilled CFG Scale, ...)
        if not value.strip().lower().startswith("use same"):
            b.drop(f"{key}: {short(value, 40)} (not a dreamshell hires setting)")
    described = ", ".join(f"{k}: {short(v, 30)}" for k, v in known.items())
    try:
        scale = _hires_scale(b, known)
        if scale is None:
            b.drop(f"hires fix ({described}; no Size, so no first pass)")
            return
        steps_text = known.get("Hires steps", "").strip()
        steps = b.convert("--hires_steps", steps_text) if steps_text not in ("", "0") else b.values.get("steps")
        values = {"hires_scale": b.convert("--hires_scale", format_number(scale)), "hires_steps": steps,
                  "hires_strength": b.convert("--hires_strength", strength or hires.DEFAULT_STRENGTH)}
    except (SwitchError, ValueError) as e:
        b.drop(f"hires fix ({described}{', Denoising strength: ' + strength if strength else ''}; {e})")
        return
    if not strength:
        b.note(f"hires fix without a Denoising strength: A1111's default {hires.DEFAULT_STRENGTH:g} used")
    upscaler, note = hires_upscaler(known["Hires upscaler"]) if "Hires upscaler" in known else \
        (hires.DEFAULT_UPSCALER, "A1111's old hires fix did not record its upscaler: latent used"
         if "First pass size" in known else None)
    if note:
        b.note(note)
    b.values.update(hires_fix=True, hires_upscaler=upscaler, **values)


def _clip_skip(b: Builder, value: str | None) -> None:
    """`Clip skip: N` (A1111 writes it only when N > 1; absent or 1 is the model's own here, 1 for most)."""
    if value is not None and value.strip() not in ("", "1"):
        b.set("--clip_skip", value.strip(), "Clip skip")


def _vae(b: Builder, params: dict[str, str]) -> None:
    """`VAE: <file name>` -> --vae NAME (only the file's name: a path in metadata is not followed)."""
    name, digest = params.pop("VAE", None), params.pop("VAE hash", None)
    if name is None:
        if digest:
            b.drop(f"VAE hash: {short(digest, 20)} (no VAE name with it)")
        return
    name = name.strip()
    if name in ("", "None", "Automatic"):
        return
    base = re.split(r"[\\/]", name.rstrip("\\/"))[-1]
    if base != name:
        b.note(f"VAE: {short(name)} read as its file name {short(base)} (looked up in the VAE folder)")
    if base:
        b.set("--vae", base, "VAE")


def _decoder(b: Builder, params: dict[str, str]) -> None:
    """`VAE Decoder: TAESD` -> --decoder taesd (the tiny decoder of the model's family); `VAE Encoder: TAESD` is named:
    dreamshell encodes -I images with the model's VAE. `Full` (A1111's default) is the VAE."""
    decoder, encoder = params.pop("VAE Decoder", "").strip(), params.pop("VAE Encoder", "").strip()
    if decoder.lower() == "taesd":
        b.set("--decoder", "taesd", "VAE Decoder")
    elif decoder and decoder.lower() != "full":
        b.drop(f"VAE Decoder: {short(decoder, 20)}")
    if encoder and encoder.lower() != "full":
        b.drop(f"VAE Encoder: {short(encoder, 20)} (dreamshell encodes -I images with the model's VAE)")


def _hash_pairs(text: str) -> dict[str, str]:
    """`name: hash, name2: hash` (A1111 `lora_script.py infotext_pasted`), repeats read once."""
    pairs: dict[str, str] = {}
    for item in text.split(","):
        name, sep, digest = item.partition(":")
        if sep and name.strip() and digest.strip():
            pairs.setdefault(name.strip(), digest.strip())
    return pairs


def recorded_extras(params: dict[str, str], prompt: str) -> RecipeExtras:
    """The LoRA, embedding and VAE hashes an infotext records (`Lora hashes`, `TI hashes`, `VAE`, `VAE hash`),
    each LoRA with its weight in the prompt's tag (1 when it has none)."""
    try:
        weights = {t.name.translate(_NAME_SYMBOLS): t.weight for t in split_prompt(prompt).loras}
    except PromptError:
        weights = {}
    loras = tuple((name, weights.get(name, 1.0), digest)
                  for name, digest in _hash_pairs(params.get("Lora hashes", "")).items())
    embeddings = tuple(_hash_pairs(params.get("TI hashes", "")).items())
    vae = params.get("VAE", "").strip()
    vae = re.split(r"[\\/]", vae.rstrip("\\/"))[-1] if vae not in ("", "None", "Automatic") else ""
    return RecipeExtras(loras, embeddings, (vae, params.get("VAE hash", "").strip()) if vae else None,
                        controls=recorded_controls(params), sha256=civitai_hashes(params.get("Hashes", "")) or ())


_HASHES_KINDS = {"lora": "lora", "lyco": "lora", "embed": "embedding", "model": "checkpoint", "vae": "vae"}


def civitai_hashes(value: str) -> tuple[tuple[str, str, str], ...] | None:
    """CivitAI's `Hashes` JSON (its A1111 extension: `{"model": H, "vae": H, "lora:NAME": H, "embed:NAME": H}`, each
    H the start of the file's sha256) as (kind, name, H); None when it is not such an object."""
    try:
        data = json.loads(value) if value else None
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    out = []
    for key, digest in data.items():
        kind, _, name = str(key).partition(":")
        if kind.lower() in _HASHES_KINDS and isinstance(digest, str) and re.fullmatch(r"[0-9a-fA-F]{8,64}", digest):
            out.append((_HASHES_KINDS[kind.lower()], name.strip(), digest.lower()))
    return tuple(out)


_CIVITAI_KINDS = {"checkpoint": "checkpoint", "lora": "LoRA", "locon": "LoRA", "lycoris": "LyCORIS", "dora": "DoRA",
                  "embed": "embedding", "embedding": "embedding", "textualinversion": "embedding", "vae": "VAE",
                  "upscaler": "upscaler", "hypernet": "hypernetwork", "controlnet": "ControlNet"}


def civitai_resources(value: str) -> list[dict]:
    """CivitAI's `Civitai resources` JSON list, each resource as {kind, name, version, weight, version_id}:
    `{"type": "lora", "weight": 0.85, "modelVersionId": 210432, "modelName": "...", "modelVersionName": "..."}`
    or the newer `{"air": "urn:air:sdxl:lora:civitai:MODEL@VERSION", ...}`; what is not a list of objects is []."""
    try:
        items = json.loads(value)
    except ValueError:
        return []
    out = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        kind, version_id = str(item.get("type") or ""), item.get("modelVersionId")
        air = str(item.get("air") or item.get("urn") or "")
        parts = air.split(":")
        if len(parts) >= 6 and parts[0] == "urn" and parts[1] == "air":
            kind = kind or parts[3]
            version_id = version_id or parts[5].partition("@")[2] or None
        weight = item.get("weight")
        out.append({"kind": _CIVITAI_KINDS.get(kind.lower(), kind or "resource"),
                    "name": str(item.get("modelName") or ""),
                    "version": str(item.get("modelVersionName") or item.get("versionName") or ""),
                    "weight": weight if isinstance(weight, (int, float)) and not isinstance(weight, bool) else None,
                    "version_id": version_id})
    return out


def _civitai_resources(b: Builder, value: str | None) -> None:
    """Name each resource CivitAI lists: it names a model page, not a file, so nothing is applied from it."""
    if value is None:
        return
    found = civitai_resources(value)
    if not found:
        b.drop(f"Civitai resources: {short(value, 40)}")
        return
    named = []
    for r in found:
        extra = [f"version '{short(r['version'], 30)}'"] if r["version"] else []
        if r["weight"] is not None:
            extra.append(f"weight {format_number(r['weight'])}")
        if r["version_id"]:
            extra.append(f"version id {r['version_id']}")
        name = f"'{short(r['name'], 40)}'" if r["name"] else "(no name)"
        named.append(f"{r['kind']} {name}" + (f" ({', '.join(extra)})" if extra else ""))
    b.drop("Civitai resources: " + "; ".join(named) + " (CivitAI names model pages, not files: dreamshell uses the "
           "prompt's own <lora:...> tags and words, --model and --vae)")


_PART_FILE = re.compile(r"(ae|clip_[lg]|t5xxl\w*|t5-?v1_1\w*|flux\w*_?vae\w*)$", re.I)   # ComfyUI/Forge part files
_RESCALE_KEYS = ("CFG Rescale phi", "CFG Rescale φ", "CFG Rescale")   # the CFG rescale extensions' spellings


def _families(b: Builder, params: dict[str, str]) -> None:
    """What Forge and the extensions write for the newer families: `Distilled CFG Scale` (FLUX.1 dev's guidance),
    `CFG Rescale phi`, the VAE / text encoder files Forge lists as `Module N`, its `Diffusion in Low Bits`, and
    A1111's `Noise Schedule: Zero Terminal SNR` (a property of the model here)."""
    guidance = params.pop("Distilled CFG Scale", None)
    if guidance is not None:
        b.set("--guidance", guidance.strip(), "Distilled CFG Scale")
    for key in _RESCALE_KEYS:
        value = params.pop(key, None)
        if value is not None and value.strip() not in ("", "0", "0.0"):
            b.set("--cfg_rescale", value.strip(), key)
    parts = [params.pop(k) for k in sorted((k for k in list(params) if re.fullmatch(r"Module \d+", k)
                                            and _PART_FILE.match(params[k].strip())), key=lambda k: int(k.split()[1]))]
    if parts:   # FLUX.1's / SD 3's own parts; any other module (an SDXL VAE) is named as not carried over
        b.note(f"Forge's Module files ({short(', '.join(parts), 80)}: the model's VAE and text encoders) are the "
               "ones the models file names for the model here")
    low = params.pop("Diffusion in Low Bits", None)
    if low is not None and low.strip().lower() not in ("automatic", "automatic (fp16 lora)"):
        b.drop(f"Diffusion in Low Bits: {short(low, 30)} (Forge's storage precision; dreamshell runs the weights as "
               "the file holds them)")
    schedule = params.pop("Noise Schedule", None)
    if schedule is not None and schedule.strip().lower() not in ("default", ""):
        b.note(f"Noise Schedule: {short(schedule, 30)}: here a property of the model ('zero_snr: true' in the models "
               "file, or the weights' ztsnr key)")


def _noise(b: Builder, params: dict[str, str]) -> None:
    """`RNG` (absent: A1111's default, GPU) and `ENSD`. GPU noise is torch.randn on A1111's CUDA device; it is
    read as --rng nv, the same values made on any device (so the line runs here, with or without CUDA)."""
    value, ensd = params.pop("RNG", None), params.pop("ENSD", None)
    if ensd is not None and ensd.strip() not in ("", "0"):
        b.set("--ensd", ensd.strip(), "ENSD")
    source = rng.find_rng(value) if value is not None else "gpu"
    if source is None:
        b.drop(f"RNG: {short(value, 20)} (a noise source dreamshell does not make: cpu, gpu, nv)")
        return
    if source == "gpu":
        what = "RNG: GPU" if value is not None else "no RNG key (A1111's default: GPU)"
        b.note(f"{what} read as --rng nv: CUDA's torch.randn made on any device, equal to A1111's GPU noise to "
               "within rounding (--rng gpu draws it on a CUDA GPU itself)")
        source = "nv"
    if source != rng.DEFAULT_RNG:
        b.values["rng"] = source


def _variation(b: Builder, params: dict[str, str]) -> None:
    seed, strength = params.pop("Variation seed", None), params.pop("Variation seed strength", None)
    if seed is None:
        return
    try:
        weight = float(strength or 0)
    except ValueError:
        weight = -1
    if weight == 0:
        return
    if seed.strip() == "-1":
        b.drop(f"Variation seed -1 (random) with strength {strength}")
        return
    b.set("-V", f"{seed}:{strength}", "Variation seed")


def read_a1111(text: str, source: str = "A1111 parameters") -> Recipe:
    """The recipe in an A1111 infotext; our own carries the exact line as `Dreamshell`."""
    prompt, negative, params = parse_a1111(text)
    if "Dreamshell" in params:
        try:
            req = parse_request(params["Dreamshell"])
        except ParseError as e:
            raise MetadataError(f"{source}: its Dreamshell line cannot be read ({e})") from None
        if isinstance(req, DreamRequest):
            return Recipe(req, (), "dreamshell (parameters)", recorded_extras(params, req.prompt))
    version = params.get("Version")
    b = Builder(source + (f" ({version})" if version else ""))
    first = {k: params.get(k) for k in ("Sampler", "Schedule type", "CFG scale", "Distilled CFG Scale", "Model")}
    first.update({"Prompt": prompt, "Negative prompt": negative})
    notes: list[str] = []
    dropped: list[str] = []
    text_prompt = a1111_to_dreamshell(prompt, notes, dropped)
    if negative:
        text_prompt += " [" + a1111_to_dreamshell(negative, notes, dropped, negative=True) + "]"
    for n in notes:
        b.note(n)
    for d in dropped:
        b.drop(d)
    recorded = recorded_extras(params, text_prompt)
    if "Steps" in params:
        b.set("-s", params.pop("Steps"), "Steps")
    if "Seed" in params:
        b.seed(params.pop("Seed"))
    if "CFG scale" in params:
        b.set("-C", params.pop("CFG scale"), "CFG scale")
    size = _SIZE.match(params.pop("Size", ""))
    if size:
        b.size(size.group(1), size.group(2))
    _sampler(b, params)
    model, model_hash = params.pop("Model", None), params.pop("Model hash", None)
    if model:
        b.set("--model", model, "Model")
    elif model_hash:
        b.drop(f"Model hash: {model_hash} (no model name; dreamshell's model is used)")
    _vae(b, params)
    _decoder(b, params)
    _variation(b, params)
    _clip_skip(b, params.pop("Clip skip", None))
    _families(b, params)
    _noise(b, params)
    _civitai_resources(b, params.pop("Civitai resources", None))
    if params.pop("Tiling", "").strip().lower() == "true":
        b.values["seamless"] = True
    _hires_and_strength(b, params, first)
    read_control_units(b, params)
    read_inpaint_area(b, params)
    if civitai_hashes(params.get("Hashes", "")) is not None:   # checked against the session's files, as these:
        params.pop("Hashes")
    for key in ("Version", "Lora hashes", "TI hashes"):   # the hashes are checked against the session's files
        params.pop(key, None)
    for key, value in params.items():
        b.drop(f"{key}: {short(value, 40)}")
    return b.build(text_prompt, recorded)
