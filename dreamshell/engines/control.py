"""ControlNets and T2I-Adapters beside the resident model (imports torch).

A line's `--control` files (planned into LineFiles.controls) are loaded once each and kept while the model
stays; each image runs diffusers' ControlNet pipeline for its mode (StableDiffusion[XL]ControlNet, ...Img2Img,
...Inpaint) or the T2I-Adapter pipeline, built on the resident pipeline's own components (loading.derive:
nothing copied or cast), so LoRAs, embeddings, a VAE swap and the sampler apply as on any line.

Files: single files in lllyasviel's original layout (`control_model.*`) or with diffusers keys, read by
`ControlNetModel.from_single_file` with a config shipped in dreamshell/configs/controlnet-<family>/ (the
published control_v11p_sd15_canny, thibaud's SD 2.1 and diffusers' SDXL canny values) or the config the file
carries in its metadata (`config`, the demo ControlNet); `.pth`/`.ckpt` only when torch.load(weights_only=True)
reads them; diffusers folders (ControlNetModel, T2IAdapter) by from_pretrained.
"""

from __future__ import annotations

import hashlib
import json
import types
import os
from pathlib import Path

from ..line.request import DreamRequest
from ..line.safetext import first_line
from ..weights.checkpoint import FAMILY_NAMES
from ..weights.hashing import cache_dir
from ..weights.library import UsedControl
from ..weights.safetensors import read_header
from . import loading
from .protocols import GenerationError

PIPELINES = {
    ("controlnet", "sd", "txt2img"): "StableDiffusionControlNetPipeline",
    ("controlnet", "sd", "img2img"): "StableDiffusionControlNetImg2ImgPipeline",
    ("controlnet", "sd", "inpaint"): "StableDiffusionControlNetInpaintPipeline",
    ("controlnet", "sdxl", "txt2img"): "StableDiffusionXLControlNetPipeline",
    ("controlnet", "sdxl", "img2img"): "StableDiffusionXLControlNetImg2ImgPipeline",
    ("controlnet", "sdxl", "inpaint"): "StableDiffusionXLControlNetInpaintPipeline",
    ("t2i-adapter", "sd", "txt2img"): "StableDiffusionAdapterPipeline",
    ("t2i-adapter", "sdxl", "txt2img"): "StableDiffusionXLAdapterPipeline",
}


def config_for(path: Path, family: str) -> Path:
    """The diffusers config folder for a single ControlNet file: the one in its metadata, else the shipped one."""
    carried = None
    if path.suffix.lower() == ".safetensors":
        try:
            carried = read_header(path).metadata.get("config")
        except Exception:
            carried = None
    if carried:
        try:
            config = json.loads(carried)
        except ValueError:
            raise GenerationError(f"ControlNet {path.name}: the config in its metadata is not JSON") from None
        digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
        folder = cache_dir() / "control-configs" / digest
        if not (folder / "config.json").exists():
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f"config.json.tmp-{os.getpid()}"
            tmp.write_text(json.dumps(config, indent=2))
            tmp.replace(folder / "config.json")
        return folder
    folder = loading.CONFIGS_DIR / f"controlnet-{family}"
    if not (folder / "config.json").exists():
        raise GenerationError(f"ControlNet {path.name}: no shipped config for {FAMILY_NAMES.get(family, family)} "
                              "ControlNet files; use its diffusers folder")
    return folder


def load_control(used: UsedControl, dtype, device):
    """One ControlNet or T2I-Adapter on `device` in `dtype`, frozen; one line when it cannot load."""
    import diffusers
    path = used.path
    try:
        if used.kind == "t2i-adapter":
            if not path.is_dir():
                raise GenerationError(f"T2I-Adapter {used.name}: give its diffusers folder (config.json and weights)")
            model = diffusers.T2IAdapter.from_pretrained(str(path), local_files_only=True, torch_dtype=dtype)
        elif path.is_dir():
            model = diffusers.ControlNetModel.from_pretrained(str(path), local_files_only=True, torch_dtype=dtype)
        else:
            if path.suffix.lower() != ".safetensors":
                loading.ckpt_shapes(path)     # refuses a pickle torch.load(weights_only=True) will not read
            model = diffusers.ControlNetModel.from_single_file(str(path), config=str(config_for(path, used.family)),
                                                               local_files_only=True, torch_dtype=dtype)
    except GenerationError:
        raise
    except Exception as e:  # diffusers raises many kinds; the user needs one line
        raise GenerationError(f"cannot load ControlNet {used.name} from {path}: {first_line(e)}") from e
    model.requires_grad_(False)
    model.eval()
    return model.to(device)


class ControlModels:
    """The control models loaded for the resident model (by path), and the pipelines that run them."""

    def __init__(self):
        self._loaded: dict[Path, object] = {}

    def reset(self) -> None:
        self._loaded.clear()

    def model(self, gen, used: UsedControl):
        if used.path not in self._loaded:
            load_dtype = gen.torch.float32 if gen.vae_float32 else gen.dtype
            model = load_control(used, load_dtype, gen.device)
            if load_dtype != gen.dtype:
                model.to(gen.dtype)
            check_fits(gen, used, model)
            self._loaded[used.path] = model
        return self._loaded[used.path]

    def pipeline(self, gen, mode: str, used: tuple[UsedControl, ...]):
        """A pipeline for `mode` with the line's control models, on the resident pipeline's components."""
        import diffusers
        kind = used[0].kind
        if any(u.kind != kind for u in used):
            raise GenerationError("a line takes ControlNets or T2I-Adapters, not both")
        family = "sdxl" if gen.is_sdxl else "sd"
        if gen.kind.endswith("-inpaint"):
            mode = "inpaint"
        if gen.kind == "sdxl-refiner":
            raise GenerationError(f"model '{gen.spec.name}' is an SDXL refiner: diffusers has no ControlNet pipeline "
                                  "for it")
        name = PIPELINES.get((kind, family, mode))
        if name is None:
            what = "an inpainting model" if gen.kind.endswith("-inpaint") else f"-I/-M lines ({mode})"
            raise GenerationError(f"T2I-Adapter {used[0].name}: diffusers' adapter pipelines make images from noise "
                                  f"only, not {what}; use a ControlNet")
        models = [self.model(gen, u) for u in used]
        if kind == "controlnet":
            extra = {"controlnet": models[0] if len(models) == 1 else diffusers.MultiControlNetModel(models)}
        else:
            extra = {"adapter": models[0] if len(models) == 1 else diffusers.MultiAdapter(models)}
        pipe = loading.derive(getattr(diffusers, name), gen._pipes["txt2img"], **extra)
        pipe.set_progress_bar_config(disable=True)
        if hasattr(pipe, "decode_latents") and kind != "controlnet":
            pipe.decode_latents = types.MethodType(_plain_decode, pipe)
        return pipe


def _plain_decode(pipe, latents):
    """The adapter pipelines' decode as StableDiffusionPipeline decodes (`latents / scaling_factor`; theirs multiply by
    its inverse, an ulp away), so a weight-0 adapter gives the plain line's bytes."""
    image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
    return (image / 2 + 0.5).clamp(0, 1).cpu().permute(0, 2, 3, 1).float().numpy()


def check_fits(gen, used: UsedControl, model) -> None:
    """A control model made for another model family is one line (its cross-attention or channels differ)."""
    pipe = gen._pipes["txt2img"]
    unet = pipe.unet.config
    if used.kind == "t2i-adapter":   # its features join each level of an SD-shaped UNet, the first at the latents' size
        fits = (list(model.config.channels) == list(unet.block_out_channels)[:len(model.config.channels)]
                and model.config.downscale_factor == pipe.vae_scale_factor
                and str(unet.down_block_types[0]).startswith("CrossAttn"))
        if not fits:
            raise GenerationError(f"T2I-Adapter {used.name} is made for a UNet like SD's (levels "
                                  f"{list(model.config.channels)}, latents at 1/{model.config.downscale_factor}); "
                                  f"model '{gen.spec.name}' has levels {list(unet.block_out_channels)} and latents at "
                                  f"1/{pipe.vae_scale_factor}")
        return
    theirs, ours = model.config.cross_attention_dim, unet.cross_attention_dim
    if theirs != ours:
        label = FAMILY_NAMES.get(used.family, "another model")
        raise GenerationError(f"ControlNet {used.name} is made for {label} (width {theirs}); model '{gen.spec.name}' "
                              f"has width {ours}: use a ControlNet made for it")


def maps_for(maps: dict, size: tuple[int, int]) -> list:
    """The line's control maps at `size` (made there by run/image.load_inputs, else resized from the line's)."""
    from PIL import Image
    if size in maps:
        return list(maps[size])
    first = next(iter(maps.values()))
    out = []
    for m in first:
        if m.mode == "RGBA":     # the inpaint mark stays sharp
            resized = m.convert("RGB").resize(size, Image.BILINEAR)
            resized.putalpha(m.getchannel("A").resize(size, Image.NEAREST))
            out.append(resized)
        else:
            out.append(m.resize(size, Image.BILINEAR))
    return out


def as_input(m, torch):
    """A map as the pipeline takes it: PIL, or for an inpaint map a tensor in [0, 1] with the marked area -1
    (ControlNet 1.1 inpaint's convention, diffusers' make_inpaint_condition)."""
    if m.mode != "RGBA":
        return m
    import numpy as np
    rgb = np.asarray(m.convert("RGB"), dtype=np.float32) / 255.0
    rgb[np.asarray(m.getchannel("A")) >= 128] = -1.0
    return torch.from_numpy(rgb).permute(2, 0, 1)[None]


def arguments(gen, pipe, request: DreamRequest, used: tuple[UsedControl, ...], maps: dict, args: dict,
              step_end) -> None:
    """The pipeline call's control arguments for this image (added to `args`)."""
    import inspect
    size = (args.get("width") or request.width, args.get("height") or request.height)
    images = [as_input(m, gen.torch) for m in maps_for(maps, size)]
    specs = request.control
    one = len(images) == 1
    if used[0].kind == "controlnet":
        key = "control_image" if "control_image" in inspect.signature(pipe.__call__).parameters else "image"
        args[key] = images[0] if one else images
        args["controlnet_conditioning_scale"] = specs[0].weight if one else [s.weight for s in specs]
        args["control_guidance_start"] = specs[0].start if one else [s.start for s in specs]
        args["control_guidance_end"] = specs[0].end if one else [s.end for s in specs]
        return
    models = [gen.control.model(gen, u) for u in used]   # an adapter of one input channel takes a grey map
    images = [m.convert("L") if getattr(a.config, "in_channels", 3) == 1 and hasattr(m, "convert") else m
              for m, a in zip(images, models)]
    args["image"] = images[0] if one else images
    args["adapter_conditioning_scale"] = specs[0].weight if one else [s.weight for s in specs]
    if gen.is_sdxl:
        args["adapter_conditioning_factor"] = specs[0].end
    args.pop("callback_on_step_end", None)   # the adapter pipelines take the older callback

    class Steps:
        @property
        def num_timesteps(self):
            return len(pipe.scheduler.timesteps)

    steps = Steps()
    args["callback"] = lambda i, t, latents: step_end(steps, i, t, {"latents": latents})
    args["callback_steps"] = 1
