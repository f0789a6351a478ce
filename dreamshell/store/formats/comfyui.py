"""ComfyUI's `prompt` chunk (the API graph: node id -> {class_type, inputs}) when it is the plain
checkpoint -> CLIP text encode -> KSampler -> VAE decode graph, LoRA loaders allowed (as `<lora:...>` tags),
with CLIPSetLastLayer (clip skip) and VAELoader (--vae); other graphs are one clear line. Node and input
names: ComfyUI `nodes.py`. A SamplerCustom in the KSampler's place is read when its sampler is a
KSamplerSelect and its sigmas a BasicScheduler (-s, --schedule) or an SDTurboScheduler (its timesteps,
comfy_extras/nodes_custom_sampler.py: 999, 899, ... from 10 - int(10 * denoise), as --timesteps)."""

from __future__ import annotations

import re

from ...line.control import ControlError, ControlSpec, check_control, default_preprocessor
from ...line.prompt import PromptError, split_prompt
from ...line.switches import format_number
from .common import Builder, MetadataError, Recipe, load_json, short
from .prompts import a1111_to_dreamshell

_LOADERS = ("CheckpointLoaderSimple", "CheckpointLoader", "LoraLoader", "LoraLoaderModelOnly")


def _node(graph: dict, link) -> dict | None:
    """The node an input links to (`[node_id, output_index]`), or None for a plain value."""
    if isinstance(link, list) and len(link) == 2 and str(link[0]) in graph:
        node = graph[str(link[0])]
        return node if isinstance(node, dict) else None
    return None


def _other(why: str) -> MetadataError:
    return MetadataError(f"ComfyUI graph: {why}; dreamshell reads only the plain checkpoint -> CLIP text encode "
                         "-> KSampler -> VAE decode graph (LoRA loaders allowed)")


def _text(graph: dict, link, which: str) -> str:
    node = _node(graph, link)
    if node is None or node.get("class_type") != "CLIPTextEncode":
        kind = node.get("class_type") if node else "no node"
        raise _other(f"the {which} prompt comes from {kind}, not a CLIPTextEncode")
    text = node.get("inputs", {}).get("text")
    if not isinstance(text, str):
        raise _other(f"the {which} prompt text comes from another node")
    return text


def _file_stem(name: str) -> str:
    """A model file's name without its folders and extension ('style/detail.safetensors' -> 'detail')."""
    base = re.split(r"[\\/]", name.rstrip("\\/"))[-1]
    return base.rsplit(".", 1)[0] if base.lower().endswith((".safetensors", ".ckpt", ".pt", ".pth", ".bin")) else base


def _number(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _lora(b: Builder, kind: str, inputs: dict) -> str | None:
    """A LoraLoader node as a `<lora:NAME:W>` tag: W is strength_model (the UNet's); a different strength_clip
    is named (dreamshell gives a LoRA one weight for both)."""
    name = _file_stem(str(inputs.get("lora_name") or "")).strip()
    unet = _number(inputs.get("strength_model", 1.0))
    clip = 0 if kind == "LoraLoaderModelOnly" else _number(inputs.get("strength_clip", 1.0))
    what = f"LoRA {short(inputs.get('lora_name'), 60)}"
    if unet is None or clip is None:
        b.drop(f"{what} (its strength comes from another node)")
        return None
    if unet == 0 and clip == 0:
        b.drop(f"{what} (strength 0: no effect)")
        return None
    tag = f"<lora:{name}:{format_number(unet)}>"
    try:
        parsed = split_prompt(tag).loras
    except PromptError as e:
        b.drop(f"{what} ({e})")
        return None
    if not parsed:
        b.drop(f"{what} (no name)")
        return None
    if clip != unet:
        how = "model only" if kind == "LoraLoaderModelOnly" else f"strength_clip {format_number(clip)}"
        b.note(f"{what} ({how}, strength_model {format_number(unet)}) kept as {tag}: dreamshell gives a LoRA one "
               "weight for the UNet and the text encoder")
    return tag


def _loaders(b: Builder, graph: dict, link) -> list[str]:
    """Walk the model input back to the checkpoint; LoRA loaders on the way become `<lora:...>` tags (returned
    in the order they are applied)."""
    seen = 0
    tags: list[str] = []
    node = _node(graph, link)
    while node is not None and seen < 50:
        seen += 1
        kind, inputs = node.get("class_type"), node.get("inputs", {})
        if kind not in _LOADERS:
            raise _other(f"the model passes through {kind}")
        if kind.startswith("Lora"):
            tag = _lora(b, kind, inputs)
            if tag and any(split_prompt(t).loras[0].name == split_prompt(tag).loras[0].name for t in tags):
                b.drop(f"LoRA {short(inputs.get('lora_name'), 60)} (loaded twice; dreamshell takes each LoRA once)")
            elif tag:
                tags.append(tag)
            node = _node(graph, inputs.get("model"))
            continue
        stem = _file_stem(str(inputs.get("ckpt_name") or ""))
        if stem:
            b.set("--model", stem, "ckpt_name")
        return tags[::-1]
    raise _other("the model comes from no checkpoint loader")


def _clip_skip(b: Builder, graph: dict, link) -> None:
    """CLIPSetLastLayer on the positive prompt's CLIP: stop_at_clip_layer -N is A1111's Clip skip N."""
    node, seen = _node(graph, link), 0
    while node is not None and seen < 50:
        seen += 1
        inputs = node.get("inputs", {})
        if node.get("class_type") == "CLIPSetLastLayer":
            layer = inputs.get("stop_at_clip_layer")
            if isinstance(layer, int) and not isinstance(layer, bool) and layer <= -2:
                b.set("--clip_skip", -layer, "stop_at_clip_layer")
            elif layer != -1:
                b.drop(f"CLIPSetLastLayer stop_at_clip_layer {short(layer, 20)}")
            return
        node = _node(graph, inputs.get("clip"))


def _vae(b: Builder, graph: dict) -> None:
    """A VAELoader feeding the VAE decode: --vae with its file name."""
    for node in graph.values():
        if isinstance(node, dict) and node.get("class_type") == "VAEDecode":
            loader = _node(graph, node.get("inputs", {}).get("vae"))
            if loader and loader.get("class_type") == "VAELoader":
                name = str(loader.get("inputs", {}).get("vae_name") or "")
                base = re.split(r"[\\/]", name.rstrip("\\/"))[-1]
                if base:
                    b.set("--vae", base, "vae_name")
                return


def _latent(b: Builder, graph: dict, link, denoise) -> None:
    node = _node(graph, link)
    kind = node.get("class_type") if node else None
    if kind == "EmptyLatentImage":
        inputs = node.get("inputs", {})
        b.size(inputs.get("width"), inputs.get("height"))
        batch = inputs.get("batch_size", 1)
        if isinstance(batch, int) and batch > 1:
            b.drop(f"batch_size {batch} (one batch noise in ComfyUI; here -n {batch} makes seeds S, S+1, ...)")
        if denoise not in (None, 1, 1.0):
            b.drop(f"denoise {denoise} on an empty latent")
    elif kind == "VAEEncode":
        image = _node(graph, node.get("inputs", {}).get("pixels"))
        name = image.get("inputs", {}).get("image") if image else None
        b.drop(f"img2img from ComfyUI input {short(name or '?', 40)} at denoise {denoise} (add -I PATH -f {denoise})")
    else:
        raise _other(f"the latent comes from {kind or 'no node'}")


def read_comfyui(text: str) -> Recipe:
    """The recipe of a plain ComfyUI text-to-image graph."""
    graph = load_json(text, "ComfyUI prompt")
    if not isinstance(graph, dict):
        raise MetadataError("ComfyUI prompt is not a JSON object")
    samplers = [n for n in graph.values() if isinstance(n, dict) and n.get("class_type") in _SAMPLER_NODES]
    kinds = sorted({str(n.get("class_type")) for n in graph.values() if isinstance(n, dict)})
    if len(samplers) != 1:
        raise _other(f"it has {len(samplers)} KSampler nodes (nodes: {short(', '.join(kinds), 120)})")
    if not any(isinstance(n, dict) and n.get("class_type") == "VAEDecode" for n in graph.values()):
        raise _other("it has no VAEDecode node")
    inputs = samplers[0].get("inputs", {})
    b = Builder("ComfyUI prompt graph")
    notes: list[str] = []
    dropped: list[str] = []
    positive_link = comfy_controls(b, graph, inputs.get("positive"))
    negative_link = comfy_controls(None, graph, inputs.get("negative"))
    prompt = a1111_to_dreamshell(_text(graph, positive_link, "positive"), notes, dropped, loras=False)
    negative = _text(graph, negative_link, "negative")
    tags = _loaders(b, graph, inputs.get("model"))
    prompt = " ".join([prompt, *tags]).strip()
    if negative.strip():
        prompt += " [" + a1111_to_dreamshell(negative, notes, dropped, negative=True, loras=False) + "]"
    for n in notes:
        b.note(n)
    for d in dropped:
        b.drop(d)
    if samplers[0].get("class_type") == "SamplerCustom":
        inputs = _custom_sampler(b, graph, inputs)
    if "seed" in inputs:
        b.seed(inputs["seed"])
    if "steps" in inputs:
        b.set("-s", inputs["steps"], "steps")
    if "cfg" in inputs:
        b.set("-C", inputs["cfg"], "cfg")
    _comfy_sampler(b, str(inputs.get("sampler_name", "")), str(inputs.get("scheduler", "")))
    if "timesteps" in inputs and b.set("--timesteps", inputs["timesteps"], "SDTurboScheduler timesteps"):
        b.values["steps"] = len(b.values["timesteps"])
        b.values.pop("schedule", None)
    positive = _node(graph, positive_link)
    _clip_skip(b, graph, positive.get("inputs", {}).get("clip") if positive else None)
    _vae(b, graph)
    _latent(b, graph, inputs.get("latent_image"), inputs.get("denoise"))
    return b.build(prompt)


_SAMPLER_NODES = ("KSampler", "SamplerCustom")


def _custom_sampler(b: Builder, graph: dict, inputs: dict) -> dict:
    """A SamplerCustom's inputs as a KSampler's: seed from noise_seed, sampler_name from its KSamplerSelect,
    steps and scheduler from a BasicScheduler, or the timesteps an SDTurboScheduler makes."""
    out = {k: inputs.get(k) for k in ("cfg", "positive", "negative", "model", "latent_image") if k in inputs}
    if inputs.get("add_noise") is False:
        b.drop("add_noise false (dreamshell starts from the seed's noise)")
    if "noise_seed" in inputs:
        out["seed"] = inputs["noise_seed"]
    picker = _node(graph, inputs.get("sampler"))
    if picker is None or picker.get("class_type") != "KSamplerSelect":
        raise _other(f"the sampler comes from {picker.get('class_type') if picker else 'no node'}, not a KSamplerSelect")
    out["sampler_name"] = picker.get("inputs", {}).get("sampler_name", "")
    sigmas = _node(graph, inputs.get("sigmas"))
    kind = sigmas.get("class_type") if sigmas else None
    given = sigmas.get("inputs", {}) if sigmas else {}
    if kind == "BasicScheduler":
        out.update(steps=given.get("steps"), scheduler=given.get("scheduler", ""), denoise=given.get("denoise", 1.0))
    elif kind == "SDTurboScheduler":
        steps, denoise = _number(given.get("steps", 1)), _number(given.get("denoise", 1.0))
        if not isinstance(steps, int) or denoise is None or not 1 <= steps <= 10 or not 0 <= denoise <= 1:
            raise _other(f"its SDTurboScheduler has steps {short(given.get('steps'))} denoise "
                         f"{short(given.get('denoise'))}")
        start = 10 - int(10 * denoise)
        ladder = [999 - 100 * i for i in range(10)][start:start + steps]
        if ladder == [999]:
            out.update(steps=1, scheduler="sgm_uniform")   # one step at 999: trailing spacing exactly
        elif ladder:
            out["timesteps"] = ",".join(str(t) for t in ladder)
        if denoise != 1:
            out["denoise"] = denoise
    else:
        raise _other(f"the sigmas come from {kind or 'no node'}, not a BasicScheduler or SDTurboScheduler")
    return out


def _comfy_sampler(b: Builder, name: str, scheduler: str) -> None:
    from ...line.samplers import find_sampler, find_schedule
    sampler = find_sampler(name) if name else None
    if sampler is None:
        if name:
            b.drop(f"sampler_name {short(name)} (no dreamshell sampler)")
        return
    b.values["sampler"] = sampler.name
    found = find_schedule(scheduler) if scheduler else None
    if found is None and scheduler:
        b.drop(f"scheduler {short(scheduler)} (no dreamshell schedule)")
    elif found is not None:   # ComfyUI applies its scheduler to every sampler
        b.values["schedule"] = found.name


# ----- ControlNet nodes (issue 20): ControlNetLoader -> ControlNetApply / ControlNetApplyAdvanced on the prompt's
# conditioning (ComfyUI nodes.py), their image from LoadImage (the map itself) or Canny (comfy_extras/nodes_canny.py)

_APPLY = {"ControlNetApply": "conditioning", "ControlNetApplyAdvanced": None}
_LOADERS_CN = ("ControlNetLoader", "DiffControlNetLoader")


def _control_image(b: Builder, graph: dict, link, name: str) -> tuple[str, str | None] | None:
    """(image file name, preprocessor) of a ControlNet's image input; None (and a note) when it cannot be read."""
    node = _node(graph, link)
    kind = node.get("class_type") if node else None
    pre = "none"
    if kind == "Canny":
        low, high = node.get("inputs", {}).get("low_threshold"), node.get("inputs", {}).get("high_threshold")
        if (low, high) != (0.4, 0.8):
            b.note(f"ControlNet {short(name, 40)}: Canny thresholds {short(low, 8)}/{short(high, 8)} read as "
                   "dreamshell's canny (100/200 of 255)")
        pre, node = "canny", _node(graph, node.get("inputs", {}).get("image"))
        kind = node.get("class_type") if node else None
    if kind != "LoadImage":
        b.drop(f"ControlNet {short(name, 40)} (its image comes from {short(kind or 'no node', 40)})")
        return None
    image = str(node.get("inputs", {}).get("image") or "")
    return (image, pre) if image else None


def comfy_controls(b: Builder | None, graph: dict, link):
    """Follow a conditioning link back through ControlNet apply nodes; with `b`, each becomes a --control. Returns
    the link the conditioning comes from before them (the text encode)."""
    found, seen = [], 0
    node = _node(graph, link)
    while node is not None and node.get("class_type") in _APPLY and seen < 20:
        seen += 1
        kind, inputs = node["class_type"], node.get("inputs", {})
        index = link[1] if isinstance(link, list) and len(link) == 2 else 0
        if b is not None:
            found.append(_comfy_control(b, graph, inputs))
        link = inputs.get(_APPLY[kind] or ("negative" if index == 1 else "positive"))
        node = _node(graph, link)
    if b is not None:
        specs = tuple(spec for spec in reversed(found) if spec is not None)   # applied first, written first
        if specs:
            b.values["control"] = b.values.get("control", ()) + specs
    return link


def _comfy_control(b: Builder, graph: dict, inputs: dict) -> ControlSpec | None:
    """One ControlNet apply node's --control (its loader's file, its image, strength, start and end)."""
    loader = _node(graph, inputs.get("control_net"))
    if loader is None or loader.get("class_type") not in _LOADERS_CN:
        b.drop(f"a ControlNet from {short(loader.get('class_type') if loader else 'no node', 40)}")
        return None
    name = _file_stem(str(loader.get("inputs", {}).get("control_net_name") or ""))
    image = _control_image(b, graph, inputs.get("image"), name)
    if image is None:
        return None
    pre = image[1] if image[1] != default_preprocessor(name) else None
    values = [_number(inputs.get(k, d)) for k, d in (("strength", 1.0), ("start_percent", 0.0), ("end_percent", 1.0))]
    if None in values:
        b.drop(f"ControlNet {short(name, 40)} (its strength or steps come from another node)")
        return None
    try:
        spec = ControlSpec(name, image[0], float(values[0]), float(values[1]), float(values[2]), pre)
        check_control(spec)
    except (ControlError, TypeError, ValueError) as e:
        b.drop(f"ControlNet {short(name, 40)} ({e})")
        return None
    return spec
