"""AUTOMATIC1111's infotext (`parameters` in PNG, EXIF UserComment in JPEG/WebP): written for every
image and read from A1111, Forge, CivitAI and the rest. Reader: A1111 `modules/infotext_utils.py`
`parse_generation_parameters`; samplers: `modules/sd_samplers.py get_sampler_and_scheduler`."""

from __future__ import annotations

import json
import re

from ..formatter import format_request
from ..parser import ParseError, parse_request
from ..prompt import extract_negative
from ..request import DreamRequest
from ..samplers import effective_schedule, find_sampler, find_schedule
from ..switches import format_number
from .common import Builder, ImageMeta, MetadataError, Recipe, short
from .prompts import _to_a1111_text, a1111_to_dreamshell, dreamshell_to_a1111

# key: value pairs of A1111's last line; values may be JSON-quoted
_PARAM = re.compile(r'\s*(\w[\w \-/+]*):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_SIZE = re.compile(r"^\s*(\d+)\s*x\s*(\d+)\s*$")
_HIRES = ("Hires upscale", "Hires steps", "Hires upscaler", "Hires resize", "Hires sampler", "Hires schedule type",
          "Hires prompt", "Hires negative prompt", "Hires CFG Scale", "Hires checkpoint", "First pass size")

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
    if sampler.timesteps and not r.schedule:
        return keys
    schedule = effective_schedule(sampler, r.schedule)
    keys.append(("Schedule type", schedule.a1111 if schedule else "DDIM"))
    return keys


def _upscale_keys(r: DreamRequest) -> list[tuple[str, str]]:
    spec = r.upscale
    keys = [("Postprocess upscale by", _num(spec.factor)),
            ("Postprocess upscaler", "R-ESRGAN 2x+" if spec.factor == 2 else "R-ESRGAN 4x+")]
    if spec.strength < 1:   # ours: strength*ESRGAN + (1-strength)*Lanczos; A1111 blends upscaler 2 by visibility
        keys += [("Postprocess upscaler 2", "Lanczos"),
                 ("Postprocess upscaler 2 visibility", _num(round(1 - spec.strength, 6)))]
    return keys


def a1111_parameters(meta: ImageMeta) -> str:
    """A1111's infotext: prompt, optional 'Negative prompt:' line, then 'Steps: ...' key/values; the
    exact dreamshell line is the `Dreamshell` key."""
    r = meta.request
    positive, negative = extract_negative(r.prompt)
    try:
        prompt = dreamshell_to_a1111(positive, r.skip_normalize)
    except ValueError:
        prompt = positive
    keys = [("Steps", str(r.steps)), *_sampler_keys(r), ("CFG scale", _num(r.cfg_scale)), ("Seed", str(r.seed)),
            ("Size", f"{r.width}x{r.height}")]
    if meta.model_hash:
        keys.append(("Model hash", meta.model_hash[:10]))
    if r.model:
        keys.append(("Model", r.model))
    if r.init_img and r.strength is not None:
        keys.append(("Denoising strength", _num(r.strength)))
    if r.with_variations:
        seed, weight = r.with_variations[0]
        keys += [("Variation seed", str(seed)), ("Variation seed strength", _num(weight))]
    if r.seamless:
        keys.append(("Tiling", "True"))
    if r.upscale:
        keys += _upscale_keys(r)
    keys.append(("Dreamshell", format_request(r)))
    lines = [prompt]
    if negative:
        lines.append("Negative prompt: " + _to_a1111_text(negative.replace("\\:", ":")))
    lines.append(", ".join(f"{k}: {_value(v)}" for k, v in keys))
    return "\n".join(lines)


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
    params = {}
    for key, value in _PARAM.findall(last):
        value = value.strip()
        if value.startswith('"') and value.endswith('"'):
            try:
                value = json.loads(value)
            except ValueError:
                pass
        params[key.strip()] = str(value)
    return "\n".join(prompt).strip(), "\n".join(negative).strip(), params


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
        if label and schedule not in ("automatic", None):
            b.drop(f"Schedule type: {label} (A1111 ignores it for {base.a1111})")
        schedule = None
    else:
        resolved = effective_schedule(base, schedule)
        schedule = resolved.name if resolved else None
    b.values["sampler"] = base.name
    if schedule:
        b.values["schedule"] = schedule


def _hires_and_strength(b: Builder, params: dict[str, str]) -> None:
    hires = [f"{k}: {short(params.pop(k))}" for k in list(params) if k.startswith(_HIRES)]
    strength = params.pop("Denoising strength", None)
    if hires:
        if strength:
            hires.append(f"Denoising strength: {strength}")
        b.drop("hires fix (" + ", ".join(hires) + "; it comes with a later dreamshell)")
    elif strength:
        b.drop(f"Denoising strength: {strength} (img2img: A1111 does not record the init image; "
               f"add -I PATH -f {strength})")


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
            return Recipe(req, (), "dreamshell (parameters)")
    version = params.get("Version")
    b = Builder(source + (f" ({version})" if version else ""))
    notes: list[str] = []
    dropped: list[str] = []
    text_prompt = a1111_to_dreamshell(prompt, notes, dropped)
    if negative:
        text_prompt += " [" + a1111_to_dreamshell(negative, notes, dropped, negative=True) + "]"
    for n in notes:
        b.note(n)
    for d in dropped:
        b.drop(d)
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
    _variation(b, params)
    if params.pop("Tiling", "").strip().lower() == "true":
        b.values["seamless"] = True
    _hires_and_strength(b, params)
    params.pop("Version", None)
    for key, value in params.items():
        b.drop(f"{key}: {short(value, 40)}")
    return b.build(text_prompt)
