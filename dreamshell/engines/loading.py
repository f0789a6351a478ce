"""Loading a model lean and right: its kind read from the weights (checked by diffusers' own
detection), the pipeline class and shipped config for that kind, precision per part, CPU threads,
memory modes. Imports torch; the generator calls these from `load`.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import replace
from pathlib import Path

from ..weights.checkpoint import (
    KIND_NAMES,
    Detected,
    NotAModel,
    bundled_parts,
    classify,
    detect_folder,
    family_of,
    same_model,
    weights_header,
)
from ..weights.hashing import cache_dir
from ..weights.models import ModelSpec
from .protocols import GenerationError, Interrupted

# diffusers' infer_diffusers_model_type names -> dreamshell kinds
DIFFUSERS_TYPES = {"v1": "sd1", "inpainting": "sd1-inpaint", "v2": "sd2", "inpainting_v2": "sd2-inpaint",
                   "xl_base": "sdxl", "xl_inpaint": "sdxl-inpaint", "xl_refiner": "sdxl-refiner",
                   "playground-v2-5": "sdxl-playground", "sd3": "sd3-medium", "sd35_medium": "sd35-medium",
                   "sd35_large": "sd35-large", "flux-dev": "flux-dev", "flux-schnell": "flux-schnell"}
PIPELINES = {
    ("sd", "txt2img"): "StableDiffusionPipeline", ("sd", "img2img"): "StableDiffusionImg2ImgPipeline",
    ("sd", "inpaint"): "StableDiffusionInpaintPipeline",
    ("sdxl", "txt2img"): "StableDiffusionXLPipeline", ("sdxl", "img2img"): "StableDiffusionXLImg2ImgPipeline",
    ("sdxl", "inpaint"): "StableDiffusionXLInpaintPipeline",
}
TILE_ABOVE = {"cuda": 1024 * 1024, "mps": 1024 * 1024, "cpu": 2048 * 2048}  # pixels; VAE tiles above this
# The VAE decode's peak memory per image and output pixel in half precision, with a margin: SD's decoder holds a
# few 256-channel maps at the full size (about 2.3 KiB a pixel at 512x512; measured on an H200: BENCHMARKS.md).
VAE_DECODE_BYTES_PER_PIXEL = 4096


class _Shape:
    def __init__(self, shape):
        self.shape = tuple(shape)


def refuse_ckpt(path: Path) -> str:
    return (f"refusing {path}: it does not load with torch.load(weights_only=True), so it may "
            "hold code that would run on load; use a .safetensors file instead")


def ckpt_shapes(path: Path) -> dict:
    """Keys and shapes of a .ckpt via torch.load(weights_only=True, mmap=True): no code runs, no copy."""
    import torch
    try:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            data = torch.load(path, map_location="cpu", weights_only=True)  # an old, non-zip torch.save
    except Exception:
        raise GenerationError(refuse_ckpt(path)) from None
    step = data.get("global_step") if isinstance(data, dict) else None
    while isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise GenerationError(f"{path} holds a {type(data).__name__}, not a dictionary of weights")
    keys = {k: tuple(v.shape) for k, v in data.items() if hasattr(v, "shape")}
    if isinstance(step, int):
        keys["global_step"] = step
    return keys


def detect_weights(spec: ModelSpec) -> Detected:
    """What spec's weights are: from the header (safetensors) or a safe load (.ckpt), confirmed with
    diffusers' infer_diffusers_model_type; a diffusers folder from its configs."""
    path = spec.weights
    try:
        if path.is_dir():
            return detect_folder(path)
        if path.suffix.lower() in (".safetensors", ".gguf"):
            keys, meta = weights_header(path)
        else:
            keys, meta = ckpt_shapes(path), {}
        try:
            found = classify(keys, meta, path.name)
        except NotAModel as e:
            found = _own_config(spec, keys, e)   # a network of another size with its own config folder
            if found is not None:
                return found
            raise
    except NotAModel as e:
        text = str(e)
        raise GenerationError(f"model '{spec.name}': " + (text if text.startswith(str(path)) else f"{path} is {text}")) \
            from None
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type
    theirs = DIFFUSERS_TYPES.get(infer_diffusers_model_type({k: _Shape(v) for k, v in keys.items()
                                                              if isinstance(v, tuple)}))
    if theirs == "sd1" and found.family in ("sd3", "flux"):
        theirs = None   # diffusers' fallback when no rule matched (a diffusers-named FLUX.1 transformer)
    if theirs and not same_model(found.kind or "", theirs):  # diffusers converts by its own reading: follow it
        return replace(found, kind=theirs, note=f"diffusers reads it as {KIND_NAMES[theirs]}")
    return found


def _own_config(spec: ModelSpec, keys: dict, error: NotAModel) -> Detected | None:
    """An SD 3 or FLUX.1 network of a size no release has, which the models file gives a `kind` and a
    `config` folder for: loaded with that config (diffusers' converters follow the config's sizes)."""
    text = str(error)
    if not (spec.config and spec.kind and family_of(spec.kind) in ("sd3", "flux")
            and ("SD 3-family model of a shape" in text or "FLUX.1-shaped model" in text)):
        return None
    return Detected(spec.kind, None, f"a {family_of(spec.kind).upper()} network of its own size, loaded with the "
                    f"models file's config {spec.config}", bundled=bundled_parts(keys))


def settle_kind(spec: ModelSpec, found: Detected) -> str:
    """The kind to load: the detected one; a models-file kind that contradicts the weights is an error."""
    given = spec.kind
    if given and found.kind and same_model(given, found.kind) and given in KIND_NAMES and given != found.family:
        return given   # the models file tells what the keys cannot (SD 3.5 Large Turbo)
    if given and found.kind and not same_model(given, found.kind):
        raise GenerationError(f"model '{spec.name}': the models file says kind {given}, but {spec.weights} is "
                              f"{found.label} ({found.note}); fix or remove 'kind'")
    return found.kind or given or "sd1"


def config_folder(kind: str, prediction: str | None) -> str:
    """The shipped config for a kind: SD 2.x epsilon (the 512 base) has its own; SD 3.5 Large Turbo
    is SD 3.5 Large's network."""
    if kind == "sd35-large-turbo":
        return "sd35-large"
    return "sd2-base" if kind == "sd2" and prediction == "epsilon" else kind


def pipeline_class(kind: str, mode: str):
    """The diffusers pipeline for a kind and mode: an inpainting UNet runs every mode through the
    inpaint pipeline; the SDXL refiner is an img2img pipeline."""
    import diffusers

    from . import families
    if families.is_new_family(kind):
        return families.pipeline_class(kind, mode)
    if kind.endswith("-inpaint"):
        mode = "inpaint"
    elif kind == "sdxl-refiner":
        mode = "img2img"
    family = "sdxl" if kind.startswith("sdxl") else "sd"
    return getattr(diffusers, PIPELINES[(family, mode)])


def derive(cls, base, **extra):
    """A pipeline of class `cls` on `base`'s very components, nothing cast or copied (`extra`: components base
    lacks, a ControlNet). (diffusers' `from_pipe` casts every shared part to one dtype, float32 unless told: a
    float16 UNet became float32 and the next txt2img on CUDA failed; a float32 VAE beside a bfloat16 UNet became
    bfloat16; peft's float32 LoRA weights would be rounded.)"""
    import inspect
    kwargs = dict(extra)
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or name in extra or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if name in base.components:
            kwargs[name] = base.components[name]
        elif name in base.config and not name.startswith("_"):
            kwargs[name] = base.config[name]
    return cls(**kwargs)


def set_prediction(pipe, prediction: str | None) -> None:
    """Follow `prediction: v|epsilon|sample` (models file or weights) in the pipeline's scheduler config."""
    wanted = {"v": "v_prediction", "epsilon": "epsilon", "sample": "sample"}.get(prediction or "")
    if wanted and pipe.scheduler.config.get("prediction_type") != wanted:
        pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, prediction_type=wanted)


def native_bf16() -> bool:
    """Does this CPU compute bfloat16 natively (AVX512-BF16 or AMX)?"""
    env = os.environ.get("DREAMSHELL_CPU_BF16")
    if env in ("0", "1"):
        return env == "1"
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


# issue 17: a bfloat16 model on a CPU decodes in bfloat16 where that image is close to float32's: PSNR >= 40 dB
# (RMS error <= 2.6 levels of 255) on every image bench/bench_fast.py's bf16vae section measured, far under
# what the bfloat16 UNet itself already changes (BENCHMARKS.md). Measured: the SD 1.x/2.x/XL VAE (4 latent
# channels, the demo's too) and TAESD; SD 3's and FLUX.1's 16-channel VAEs were not, so they stay float32.
BF16_VAE_MIN_PSNR_DB = 40.0


def bf16_vae_measured(kind: str) -> bool:
    """Was this kind's VAE measured close enough in bfloat16 to decode in it beside a bfloat16 model?"""
    from . import families
    return not families.is_new_family(kind)


def physical_cores() -> int | None:
    """Physical cores (hyper-threads share one core's units; torch runs best with one thread a core)."""
    try:
        import psutil
        return psutil.cpu_count(logical=False)
    except ImportError:
        return None


def set_cpu_threads(torch) -> None:
    """torch threads = physical cores, unless the user set OMP_NUM_THREADS."""
    cores = physical_cores()
    if cores and "OMP_NUM_THREADS" not in os.environ and torch.get_num_threads() != cores:
        torch.set_num_threads(cores)


def channels_last_default(device: str) -> bool:
    """channels_last for the UNet and VAE: on a CPU (oneDNN's convolutions run NHWC; bench/bench_fast.py measures
    it against contiguous on the full-size SD 1.5 file and on the demo model, BENCHMARKS.md); elsewhere as loaded.
    DREAMSHELL_CHANNELS_LAST=0/1 decides instead."""
    env = os.environ.get("DREAMSHELL_CHANNELS_LAST")
    if env in ("0", "1"):
        return env == "1"
    return device == "cpu"


def memory_format(models, torch, channels_last: bool) -> None:
    """The 4-D weights of `models` (UNet, VAE, tiny decoder) in channels_last or contiguous layout."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for model in models:
        if model is not None and hasattr(model, "to"):
            model.to(memory_format=fmt)


def cast_all_but_vae(pipe, dtype) -> None:
    """Every model of a pipeline loaded in float32 but its VAE in `dtype` (bfloat16 on a CPU)."""
    for name, component in pipe.components.items():
        if name != "vae" and hasattr(component, "to") and hasattr(component, "parameters"):
            component.to(dtype)


def keep_vae_float32(vae, dtype, torch) -> None:
    """Run the VAE in float32 beside a bfloat16 UNet: inputs are upcast, encoded latents go back."""
    vae.to(torch.float32)
    if getattr(vae.config, "force_upcast", False):
        # SDXL-style configs ask the pipelines to upcast a float16 VAE; the SDXL img2img/inpaint pipelines'
        # `_encode_vae_image` then casts the VAE back to the image's dtype (bfloat16 here), so every later decode
        # ran in bfloat16 (or failed on float32 latents). This VAE is float32 already: nothing to upcast.
        vae.register_to_config(force_upcast=False)
    vae.encoder.register_forward_pre_hook(lambda m, args: tuple(a.float() for a in args))
    vae.decoder.register_forward_pre_hook(lambda m, args, kwargs: (tuple(a.float() for a in args), kwargs),
                                          with_kwargs=True)
    if getattr(vae, "post_quant_conv", None) is not None:   # SD 3's and FLUX.1's VAEs have no quant convs
        vae.post_quant_conv.register_forward_pre_hook(lambda m, args: tuple(a.float() for a in args))
    last = vae.quant_conv if getattr(vae, "quant_conv", None) is not None else vae.encoder
    last.register_forward_hook(lambda m, args, out: out.to(dtype))


def memory_modes(pipe, device: str, lowvram: bool) -> None:
    """Memory modes at load: CPU offload (--lowvram) or all on the device; attention slicing on MPS."""
    if lowvram and device in ("cuda", "mps"):
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    if device == "mps":
        pipe.enable_attention_slicing()  # 8 GB Macs run out of memory without it


def device_free_bytes(device: str) -> int | None:
    """The memory a CUDA device has free, PyTorch's cached blocks counted as free; None elsewhere (MPS shares the
    machine's memory, the CPU's is not the VAE's limit)."""
    if device != "cuda":
        return None
    import torch
    free, _total = torch.cuda.mem_get_info()
    return free + torch.cuda.memory_reserved() - torch.cuda.memory_allocated()


def slice_vae(device: str, pixels: int, batch: int, lowvram: bool, free_bytes: int | None,
              element_size: int = 2) -> bool:
    """Whether a batch's VAE decode goes one image at a time: with --lowvram, on MPS (no free figure), and on CUDA
    when the free memory is under twice the batch's estimated decode peak; never on the CPU or for one image.
    Slicing costs 1.2x on a 1-step batch of 4 at 512 on an H200 (BENCHMARKS.md), so a GPU with room decodes whole."""
    if batch <= 1 or device == "cpu":
        return False
    if lowvram or free_bytes is None:
        return True
    need = batch * pixels * VAE_DECODE_BYTES_PER_PIXEL * element_size // 2
    return free_bytes < 2 * need


def vae_modes(pipe, device: str, pixels: int, batch: int, lowvram: bool, free_bytes: int | None = None) -> None:
    """Per run: tile the VAE for large images, slice it (one image at a time) for batches that may not fit."""
    vae = pipe.vae
    if lowvram or pixels > TILE_ABOVE.get(device, TILE_ABOVE["cpu"]):
        vae.enable_tiling()
    else:
        vae.disable_tiling()
    element_size = next(vae.parameters()).element_size()
    if slice_vae(device, pixels, batch, lowvram, free_bytes, element_size):
        vae.enable_slicing()
    else:
        vae.disable_slicing()


def oom_advice(device: str, lowvram: bool) -> str:
    """What to try after running out of memory, naming the modes."""
    tips = ["a smaller -W/-H", "fewer -n or a smaller --batch_size"]
    if not lowvram and device in ("cuda", "mps"):
        tips.insert(0, "--lowvram (model CPU offload)")
    if device == "mps":
        tips.append("PYTORCH_MPS_HIGH_WATERMARK_RATIO=0.0 in the environment (lets MPS use all memory), "
                    "closing other apps")
    elif device == "cuda":
        tips.append("--precision float16")
    return "try " + ", ".join(tips)


CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"


def single_file_config(kind: str) -> Path:
    """A diffusers config folder (JSON + tokenizer files, no weights) for a single-file checkpoint of
    `kind`, assembled once in the user cache from the configs shipped in the package."""
    import shutil

    from .. import __version__
    source = CONFIGS_DIR / kind
    if not (source / "model_index.json").exists():
        raise GenerationError(f"no shipped config for kind '{kind}' at {source}")
    target = cache_dir() / f"configs-{__version__}" / kind
    if not (target / "model_index.json").exists():
        tmp = target.with_name(f"{kind}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp)
        for tok in tmp.glob("tokenizer*"):
            for name in ("vocab.json", "merges.txt"):
                shutil.copy(CONFIGS_DIR / "clip_tokenizer" / name, tok / name)
        try:
            tmp.rename(target)
        except OSError:  # another process got there first
            shutil.rmtree(tmp, ignore_errors=True)
    return target


@contextlib.contextmanager
def stop_checks(vae, should_stop):
    """Ctrl-C inside a VAE decode (minutes for a big image on a CPU): checked before each of the decoder's
    blocks, and so before every tile when the decode is tiled."""
    decoder = getattr(vae, "decoder", None)
    if should_stop is None or decoder is None:
        yield
        return

    def check(module, args):
        if should_stop():
            raise Interrupted()
    blocks = [getattr(decoder, "mid_block", None), *getattr(decoder, "up_blocks", [])]
    handles = [b.register_forward_pre_hook(check) for b in blocks if b is not None]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
