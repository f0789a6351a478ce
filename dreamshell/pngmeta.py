"""The recipe in every PNG: `Dream`, `sd-metadata` (InvokeAI) and `parameters` (A1111). REFERENCE.md 3.

Writing: `png_bytes(image, meta)` returns the encoded PNG with the three text chunks. Reading:
`read_recipe(path)` turns ours, InvokeAI's or A1111's chunks back into a DreamRequest. Metadata is
data: it is parsed, never evaluated. Pillow and stdlib only.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, PngImagePlugin

from .formatter import format_request
from .parser import ParseError, parse_request
from .prompt import PromptError, extract_negative, split_prompt
from .request import DreamRequest
from .samplers import find_sampler

APP_ID = "dreamshell"


class MetadataError(ValueError):
    """An image whose recipe cannot be read; str() is the one line for the user."""


@dataclass(frozen=True)
class ImageMeta:
    """What goes into the chunks of one image."""

    request: DreamRequest            # resolved: steps, seed, size, cfg, sampler, model all set
    model_hash: str = ""             # sha256 hex of the weights
    app_version: str = ""
    postprocessing: tuple[dict, ...] = field(default_factory=tuple)
    image_type: str = "txt2img"


# ----- writing

def _a1111_value(value: str) -> str:
    return json.dumps(value) if any(c in value for c in ',:\n"') else value


def a1111_parameters(meta: ImageMeta) -> str:
    """A1111's infotext: prompt, optional 'Negative prompt:' line, then 'Steps: ...' key/values."""
    r = meta.request
    positive, negative = extract_negative(r.prompt)
    sampler = find_sampler(r.sampler or "")
    keys = [("Steps", str(r.steps)), ("Sampler", sampler.a1111 if sampler and sampler.a1111 else str(r.sampler)),
            ("CFG scale", _fmt(r.cfg_scale)), ("Seed", str(r.seed)), ("Size", f"{r.width}x{r.height}")]
    if meta.model_hash:
        keys.append(("Model hash", meta.model_hash[:10]))
    if r.model:
        keys.append(("Model", r.model))
    if r.init_img and r.strength is not None:
        keys.append(("Denoising strength", _fmt(r.strength)))
    if r.variation_amount:
        keys.append(("Variation amount", _fmt(r.variation_amount)))
    if r.upscale:
        keys.append(("Postprocess upscale by", _fmt(r.upscale.factor)))
        keys.append(("Postprocess upscaler", "Real-ESRGAN"))
    keys.append(("Dreamshell", format_request(r)))
    lines = [positive]
    if negative:
        lines.append(f"Negative prompt: {negative}")
    lines.append(", ".join(f"{k}: {_a1111_value(v)}" for k, v in keys))
    return "\n".join(lines)


def _fmt(x) -> str:
    from .switches import format_number
    return format_number(x) if x is not None else ""


def sd_metadata(meta: ImageMeta) -> dict:
    """InvokeAI's sd-metadata JSON (invoke-ai/InvokeAI#266)."""
    r = meta.request
    try:
        parts = split_prompt(r.prompt)
        _, negative = extract_negative(r.prompt)
        prompts = [{"prompt": t + (f" [{negative}]" if negative and i == 0 else ""), "weight": w}
                   for i, (t, w) in enumerate(parts.positive)]
    except PromptError:
        prompts = [{"prompt": r.prompt, "weight": 1.0}]
    image = {
        "type": meta.image_type, "prompt": prompts, "seed": r.seed, "steps": r.steps,
        "cfg_scale": r.cfg_scale, "sampler": r.sampler, "width": r.width, "height": r.height,
        "variations": [{"seed": s, "weight": w} for s, w in r.with_variations],
        "postprocessing": list(meta.postprocessing) or None,
        "strength": r.strength, "init_img": r.init_img, "init_mask": r.init_mask,
        "seamless": r.seamless,
    }
    return {"model": "stable diffusion", "model_id": r.model, "model_hash": meta.model_hash,
            "app_id": APP_ID, "app_version": meta.app_version, "image": image}


def png_bytes(image: Image.Image, meta: ImageMeta) -> bytes:
    """Encode image as PNG with the Dream, sd-metadata and parameters text chunks."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Dream", format_request(meta.request))          # tEXt when Latin-1, else iTXt
    info.add_text("sd-metadata", json.dumps(sd_metadata(meta)))
    info.add_text("parameters", a1111_parameters(meta))
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


# ----- reading

def read_chunks(path: Path) -> dict[str, str]:
    """The PNG's text chunks; MetadataError for a missing or unreadable file."""
    try:
        with Image.open(path) as img:
            img.load()
            return {k: v for k, v in getattr(img, "text", {}).items() if isinstance(v, str)}
    except FileNotFoundError:
        raise MetadataError(f"{path}: no such file") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise MetadataError(f"{path}: not a readable image ({e})") from None


def read_recipe(path: Path) -> DreamRequest:
    """The request that made the image at path: from `Dream`, else `sd-metadata`, else `parameters`."""
    chunks = read_chunks(Path(path))
    errors = []
    for key, reader in (("Dream", _from_dream), ("sd-metadata", _from_sd_metadata),
                        ("parameters", _from_a1111)):
        if key in chunks:
            try:
                return reader(chunks[key])
            except (MetadataError, ParseError, ValueError, TypeError, KeyError) as e:
                errors.append(f"{key}: {e}")
    if errors:
        raise MetadataError(f"{path}: its recipe cannot be read ({'; '.join(errors)})")
    raise MetadataError(f"{path}: no recipe in this image (no Dream, sd-metadata or parameters text)")


def _from_dream(text: str) -> DreamRequest:
    req = parse_request(text)
    if not isinstance(req, DreamRequest):
        raise MetadataError("the Dream text is not a command")
    return req


def _from_sd_metadata(text: str) -> DreamRequest:
    data = json.loads(text)
    image = data["image"] if isinstance(data, dict) and "image" in data else data
    if not isinstance(image, dict):
        raise MetadataError("sd-metadata has no image section")
    prompt = image.get("prompt", "")
    if isinstance(prompt, list):
        if len(prompt) == 1:
            prompt = str(prompt[0].get("prompt", ""))
        else:
            prompt = " ".join(f"{str(p.get('prompt', '')).replace(':', chr(92) + ':')}:{p.get('weight', 1)}"
                              for p in prompt)
    if not str(prompt).strip():
        raise MetadataError("sd-metadata has no prompt")
    line = [_quote(str(prompt))]
    for key, switch in (("steps", "-s"), ("seed", "-S"), ("width", "-W"), ("height", "-H"),
                        ("cfg_scale", "-C"), ("strength", "-f")):
        if image.get(key) is not None and (key != "strength" or image.get("init_img")):
            line += [switch, str(image[key])]
    sampler = image.get("sampler")
    if sampler and find_sampler(str(sampler)):
        line += ["-A", _quote(find_sampler(str(sampler)).name)]
    if image.get("init_img"):
        line += ["-I", _quote(str(image["init_img"]))]
    if data.get("model_id") if isinstance(data, dict) else None:
        line += ["--model", _quote(str(data["model_id"]))]
    return _from_dream(" ".join(line))


# key: value pairs of A1111's last line; values may be JSON-quoted
_A1111_PARAM = re.compile(r'\s*(\w[\w \-/+]*):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_A1111_SIZE = re.compile(r"^(\d+)x(\d+)$")


def parse_a1111(text: str) -> tuple[str, str, dict[str, str]]:
    """(prompt, negative prompt, {key: value}) as A1111's parse_generation_parameters reads them."""
    *lines, last = text.strip().split("\n")
    if len(_A1111_PARAM.findall(last)) < 3:
        lines.append(last)
        last = ""
    prompt, negative, in_negative = [], [], False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    params = {}
    for key, value in _A1111_PARAM.findall(last):
        value = value.strip()
        if value.startswith('"') and value.endswith('"'):
            try:
                value = json.loads(value)
            except ValueError:
                pass
        params[key.strip()] = value
    return "\n".join(prompt).strip(), "\n".join(negative).strip(), params


def a1111_attention_to_compel(prompt: str) -> str:
    """A1111 emphasis -> compel's: `(word:1.3)` -> `(word)1.3`, `[word]` (de-emphasis) -> `(word)0.9`,
    so `[...]` is not read as a negative prompt."""
    prompt = re.sub(r"\(([^()\[\]:]+):\s*(-?\d+(?:\.\d+)?)\)", r"(\1)\2", prompt)
    prompt = re.sub(r"\[([^\[\]]+)\]", r"(\1)0.9", prompt)
    return prompt.replace("\\(", "(").replace("\\)", ")") if "\\" in prompt else prompt


def _a1111_sampler(params: dict[str, str]) -> str | None:
    name = params.get("Sampler", "")
    if params.get("Schedule type", "").lower() == "karras" and not name.endswith("Karras"):
        name = f"{name} Karras"
    found = find_sampler(name)
    return found.name if found else None


def _from_a1111(text: str) -> DreamRequest:
    prompt, negative, params = parse_a1111(text)
    if "Dreamshell" in params:  # our own infotext carries the exact command
        return _from_dream(params["Dreamshell"])
    if not prompt:
        raise MetadataError("parameters has no prompt")
    prompt = a1111_attention_to_compel(prompt).replace("\n", " ")
    if negative:
        prompt += " [" + a1111_attention_to_compel(negative).replace("[", "(").replace("]", ")").replace("\n", " ") + "]"
    line = [_quote(prompt)]
    for key, switch in (("Steps", "-s"), ("Seed", "-S"), ("CFG scale", "-C"), ("Denoising strength", None)):
        if key in params and switch:
            line += [switch, params[key]]
    size = _A1111_SIZE.match(params.get("Size", ""))
    if size:
        line += ["-W", size.group(1), "-H", size.group(2)]
    sampler = _a1111_sampler(params)
    if sampler:
        line += ["-A", _quote(sampler)]
    if params.get("Model"):
        line += ["--model", _quote(params["Model"])]
    return _from_dream(" ".join(line))


def _quote(text: str) -> str:
    from .formatter import quote
    return quote(text)
