"""ComfyUI's `prompt` chunk (the API graph: node id -> {class_type, inputs}) when it is the plain
checkpoint -> CLIP text encode -> KSampler -> VAE decode graph, LoRA loaders allowed (as `<lora:...>` tags),
with CLIPSetLastLayer (clip skip) and VAELoader (--vae); other graphs are one clear line. Node and input
names: ComfyUI `nodes.py`. A SamplerCustom in the KSampler's place is read when its sampler is a
KSamplerSelect and its sigmas a BasicScheduler (-s, --schedule) or an SDTurboScheduler (its timesteps,
comfy_extras/nodes_custom_sampler.py: 999, 899, ... from 10 - int(10 * denoise), as --timesteps)."""

from __future__ import annotations

import math
import re

from ...line.control import ControlError, ControlSpec, check_control, default_preprocessor
from ...line.prompt import PromptError, split_prompt
from ...line.switches import format_number
from .common import Builder, MetadataError, Recipe, load_json, short
from .prompts import a1111_to_dreamshell

_CHECKPOINTS = ("CheckpointLoaderSimple", "CheckpointLoader", "UNETLoader", "UnetLoaderGGUF", "UnetLoaderGGUFAdvanced")
_LOADERS = (*_CHECKPOINTS, "LoraLoader", "LoraLoaderModelOnly")
# nodes on the model's way that change how it samples (comfy_extras/nodes_model_advanced.py, nodes_sd3.py)
_MODEL_NODES = ("ModelSamplingSD3", "ModelSamplingFlux", "ModelSamplingDiscrete", "ModelSamplingAuraFlow", "RescaleCFG")
_SAMPLERS = ("KSampler", "SamplerCustomAdvanced", "SamplerCustom")
_CLIP_LOADERS = ("CLIPLoader", "DualCLIPLoader", "TripleCLIPLoader", "DualCLIPLoaderGGUF", "TripleCLIPLoaderGGUF",
                 "CLIPLoaderGGUF")


def _node(graph: dict, link) -> dict | None:
    """The node an input links to (`[node_id, output_index]`), or None for a plain value."""
    if isinstance(link, list) and len(link) == 2 and str(link[0]) in graph:
        node = graph[str(link[0])]
        return node if isinstance(node, dict) else None
    return None


def _other(why: str) -> MetadataError:
    return MetadataError(f"ComfyUI graph: {why}; dreamshell reads only the plain checkpoint -> CLIP text encode "
                         "-> KSampler -> VAE decode graph (LoRA loaders allowed; FLUX.1's and SD 3's: UNET or GGUF "
                         "loaders, FluxGuidance, SamplerCustomAdvanced)")


def _file_stem(name: str) -> str:
    """A model file's name without its folders and extension ('style/detail.safetensors' -> 'detail')."""
    base = re.split(r"[\\/]", name.rstrip("\\/"))[-1]
    stems = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf")
    return base.rsplit(".", 1)[0] if base.lower().endswith(stems) else base


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
    in the order they are applied), the sampling nodes (ModelSamplingSD3/Flux/Discrete, RescaleCFG) what they
    say."""
    seen = 0
    tags: list[str] = []
    node = _node(graph, link)
    while node is not None and seen < 50:
        seen += 1
        kind, inputs = node.get("class_type"), node.get("inputs", {})
        if kind in _MODEL_NODES:
            _model_node(b, kind, inputs)
            node = _node(graph, inputs.get("model"))
            continue
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
        stem = _file_stem(str(inputs.get("ckpt_name") or inputs.get("unet_name") or ""))
        if stem:
            b.set("--model", stem, "unet_name" if "unet_name" in inputs else "ckpt_name")
        dtype = inputs.get("weight_dtype")
        if dtype not in (None, "default"):
            b.drop(f"weight_dtype {short(dtype, 20)} (ComfyUI's storage precision; dreamshell runs the weights as the "
                   "file holds them)")
        return tags[::-1]
    raise _other("the model comes from no checkpoint loader")


def _model_node(b: Builder, kind: str, inputs: dict) -> None:
    """ModelSamplingSD3 / Flux at the model's own shift are the model's schedule; another shift is named (the
    model's own runs here); ModelSamplingDiscrete's v-prediction / zsnr are the model's; RescaleCFG is --cfg_rescale."""
    if kind == "RescaleCFG":
        multiplier = _number(inputs.get("multiplier"))
        if multiplier is None:
            b.drop("RescaleCFG (its multiplier comes from another node)")
        elif multiplier:
            b.set("--cfg_rescale", format_number(multiplier), "RescaleCFG multiplier")
    elif kind == "ModelSamplingSD3":
        shift = _number(inputs.get("shift"))
        if shift is None or not math.isclose(shift, 3.0, rel_tol=1e-6):
            shown = format_number(round(shift, 6)) if shift is not None else short(inputs.get("shift"), 10)
            b.drop(f"ModelSamplingSD3 shift {shown} (dreamshell runs the model's own shift, 3 for SD 3 / 3.5)")
    elif kind == "ModelSamplingFlux":
        # ComfyUI writes 1.1500000000000001 and 0.5000000000000001
        shifts = (_number(inputs.get("max_shift")), _number(inputs.get("base_shift")))
        if None in shifts or not all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(shifts, (1.15, 0.5))):
            shown = [format_number(round(x, 6)) if x is not None else short(inputs.get(k), 10)
                     for x, k in zip(shifts, ("max_shift", "base_shift"))]
            b.drop(f"ModelSamplingFlux max_shift {shown[0]} base_shift {shown[1]} (dreamshell runs FLUX.1's own: "
                   "1.15 and 0.5)")
    elif kind == "ModelSamplingDiscrete":
        sampling, zsnr = str(inputs.get("sampling", "eps")), inputs.get("zsnr") is True
        if sampling != "eps" or zsnr:
            b.note(f"ModelSamplingDiscrete {short(sampling, 20)}{' zsnr' if zsnr else ''}: here the model's own "
                   "(the models file's 'prediction: v' / 'zero_snr: true', or the weights' v_pred / ztsnr keys)")
    else:
        b.drop(f"{kind} (not a dreamshell setting)")


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
    if kind in ("EmptyLatentImage", "EmptySD3LatentImage"):
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


def _conditioning(b: Builder, graph: dict, link, which: str) -> tuple[str | None, object]:
    """The text of a prompt input and the CLIP link its encoder used: CLIPTextEncode (through FluxGuidance, which
    is --guidance), CLIPTextEncodeFlux / CLIPTextEncodeSD3 (their T5 text), ConditioningZeroOut (no text: None),
    and SD 3's negative made of a zeroed copy over part of the steps (ConditioningCombine of
    ConditioningSetTimestepRange nodes: the text is read, with a note)."""
    node, seen = _node(graph, link), 0
    while node is not None and seen < 50:
        seen += 1
        kind, inputs = node.get("class_type"), node.get("inputs", {})
        if kind == "FluxGuidance":
            _guidance(b, inputs.get("guidance"), "FluxGuidance guidance")
            node = _node(graph, inputs.get("conditioning"))
        elif kind == "ConditioningZeroOut":
            return None, None
        elif kind in ("ConditioningSetTimestepRange", "ConditioningCombine"):
            texts = [t for t in (_conditioning(b, graph, inputs.get(k), which)
                                 for k in ("conditioning", "conditioning_1", "conditioning_2")
                                 if inputs.get(k) is not None) if t[0] is not None]
            if kind == "ConditioningCombine" and texts:
                b.note(f"the {which} prompt is ComfyUI's SD 3 recipe (the text over the first steps, zeroed after): "
                       "read as the text for every step")
            return texts[0] if texts else (None, None)
        elif kind == "CLIPTextEncode":
            text = inputs.get("text")
            if not isinstance(text, str):
                raise _other(f"the {which} prompt text comes from another node")
            return text, inputs.get("clip")
        elif kind in ("CLIPTextEncodeFlux", "CLIPTextEncodeSD3"):
            if kind == "CLIPTextEncodeFlux":
                _guidance(b, inputs.get("guidance"), "CLIPTextEncodeFlux guidance")
            t5 = inputs.get("t5xxl")
            others = {k: inputs.get(k) for k in ("clip_l", "clip_g") if k in inputs}
            if not isinstance(t5, str):
                raise _other(f"the {which} prompt text comes from another node")
            for key, text in others.items():
                if isinstance(text, str) and text.strip() and text.strip() != t5.strip():
                    b.drop(f"the {which} prompt's {key} text {short(text, 40)!r} (dreamshell gives CLIP and T5 one "
                           "prompt: the t5xxl text)")
            return t5, inputs.get("clip")
        else:
            raise _other(f"the {which} prompt comes from {kind}, not a CLIPTextEncode")
    raise _other(f"the {which} prompt comes from no text encoder")


def _guidance(b: Builder, value, label: str) -> None:
    number = _number(value)
    if number is None:
        b.drop(f"{label} (it comes from another node)")
    else:
        b.set("--guidance", format_number(number), label)


def _encoders(b: Builder, graph: dict, link) -> None:
    """The text encoder files a CLIP loader names: the models file names them here (a note)."""
    node, seen = _node(graph, link), 0
    while node is not None and seen < 50:
        seen += 1
        kind, inputs = node.get("class_type"), node.get("inputs", {})
        if kind in _CLIP_LOADERS:
            names = [_file_stem(str(inputs[k])) for k in sorted(inputs) if k.startswith("clip_name") and inputs[k]]
            if names:
                b.note(f"{kind} {', '.join(short(n, 40) for n in names)}: the text encoders are the ones the models "
                       "file names for the model here")
            return
        node = _node(graph, inputs.get("clip"))


def _custom_sampler(b: Builder, graph: dict, node: dict) -> dict:
    """SamplerCustomAdvanced (noise, guider, sampler, sigmas nodes) or SamplerCustom, as KSampler's inputs."""
    inputs = node.get("inputs", {})
    out: dict = {"latent_image": inputs.get("latent_image")}
    if node.get("class_type") == "SamplerCustom":
        out.update({k: inputs.get(k) for k in ("model", "positive", "negative", "cfg")}, seed=inputs.get("noise_seed"))
        if inputs.get("add_noise") is False:
            b.drop("add_noise false (dreamshell always starts from the seed's noise)")
    else:
        noise = _node(graph, inputs.get("noise")) or {}
        if noise.get("class_type") != "RandomNoise":
            raise _other(f"the noise comes from {noise.get('class_type') or 'no node'}, not RandomNoise")
        out["seed"] = noise.get("inputs", {}).get("noise_seed")
        guider = _node(graph, inputs.get("guider")) or {}
        g = guider.get("inputs", {})
        if guider.get("class_type") == "BasicGuider":
            out.update(model=g.get("model"), positive=g.get("conditioning"), negative=None, cfg=1.0)
        elif guider.get("class_type") == "CFGGuider":
            out.update(model=g.get("model"), positive=g.get("positive"), negative=g.get("negative"), cfg=g.get("cfg"))
        else:
            raise _other(f"the guider is {guider.get('class_type') or 'no node'}, not BasicGuider or CFGGuider")
    select = _node(graph, out.pop("sampler", None) or inputs.get("sampler")) or {}
    if select.get("class_type") != "KSamplerSelect":
        raise _other(f"the sampler comes from {select.get('class_type') or 'no node'}, not KSamplerSelect")
    out["sampler_name"] = select.get("inputs", {}).get("sampler_name")
    sigmas = _node(graph, inputs.get("sigmas")) or {}
    kind, given = sigmas.get("class_type"), sigmas.get("inputs", {})
    if kind == "BasicScheduler":
        out.update(scheduler=given.get("scheduler"), steps=given.get("steps"), denoise=given.get("denoise"))
    elif kind == "SDTurboScheduler":   # comfy_extras/nodes_custom_sampler.py: 999, 899, ... from 10 - int(10 x denoise)
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


def read_comfyui(text: str) -> Recipe:
    """The recipe of a plain ComfyUI text-to-image graph: SD 1.x/XL's KSampler graph, and FLUX.1's and SD 3's
    (UNETLoader / UnetLoaderGGUF, DualCLIPLoader / TripleCLIPLoader, FluxGuidance, ModelSamplingSD3 / Flux,
    EmptySD3LatentImage, SamplerCustomAdvanced with BasicGuider or CFGGuider)."""
    graph = load_json(text, "ComfyUI prompt")
    if not isinstance(graph, dict):
        raise MetadataError("ComfyUI prompt is not a JSON object")
    samplers = [n for n in graph.values() if isinstance(n, dict) and n.get("class_type") in _SAMPLERS]
    kinds = sorted({str(n.get("class_type")) for n in graph.values() if isinstance(n, dict)})
    if len(samplers) != 1:
        raise _other(f"it has {len(samplers)} KSampler nodes (nodes: {short(', '.join(kinds), 120)})")
    if not any(isinstance(n, dict) and n.get("class_type") == "VAEDecode" for n in graph.values()):
        raise _other("it has no VAEDecode node")
    b = Builder("ComfyUI prompt graph")
    node = samplers[0]
    inputs = node.get("inputs", {}) if node.get("class_type") == "KSampler" else _custom_sampler(b, graph, node)
    notes: list[str] = []
    dropped: list[str] = []
    positive_link = comfy_controls(b, graph, inputs.get("positive"))
    negative_link = comfy_controls(None, graph, inputs.get("negative"))
    positive, clip = _conditioning(b, graph, positive_link, "positive")
    negative = _conditioning(b, graph, negative_link, "negative")[0] if negative_link else None
    if positive is None:
        raise _other("the positive prompt is zeroed out")
    prompt = a1111_to_dreamshell(positive, notes, dropped, loras=False)
    tags = _loaders(b, graph, inputs.get("model"))
    prompt = " ".join([prompt, *tags]).strip()
    if negative and negative.strip():
        prompt += " [" + a1111_to_dreamshell(negative, notes, dropped, negative=True, loras=False) + "]"
    for n in notes:
        b.note(n)
    for d in dropped:
        b.drop(d)
    if inputs.get("seed") is not None:
        b.seed(inputs["seed"])
    if inputs.get("steps") is not None:
        b.set("-s", inputs["steps"], "steps")
    if inputs.get("cfg") is not None:
        b.set("-C", inputs["cfg"], "cfg")
    _comfy_sampler(b, str(inputs.get("sampler_name") or ""), str(inputs.get("scheduler") or ""))
    if inputs.get("timesteps") and b.set("--timesteps", inputs["timesteps"], "SDTurboScheduler timesteps"):
        b.values["steps"] = len(b.values["timesteps"])
        b.values.pop("schedule", None)
    _clip_skip(b, graph, clip)
    _encoders(b, graph, clip)
    _vae(b, graph)
    _latent(b, graph, inputs.get("latent_image"), inputs.get("denoise"))
    return b.build(prompt)


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
