"""The families beyond SD 1.x/2.x/XL: SDXL v-prediction with zero terminal SNR, Playground v2.5 (EDM),
SD 3 / 3.5 and FLUX.1 (flow matching). What each needs from diffusers, offline: the config folder
assembled from the shipped configs (CLIP and T5 tokenizers), the pipeline classes, the parts loaded from
the files people keep (one checkpoint, or a GGUF transformer with ComfyUI's clip_l / clip_g / t5xxl / ae
files), the samplers each schedule can run, and the pipeline arguments a request becomes.

Imports torch and diffusers inside the functions; the generator calls these from `load` and `generate`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from pathlib import Path

from ..line.samplers import find_sampler, find_schedule
from ..weights import families as rules
from ..weights.checkpoint import (
    KIND_NAMES,
    PART_NAMES,
    Detected,
    NotAModel,
    detect_part,
    family_of,
    part_fits,
)
from ..weights.models import ModelSpec
from .protocols import GenerationError, Interrupted

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"
T5_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
NEW_FAMILIES = rules.NEW_FAMILIES
PIPELINES = {
    ("sd3", "txt2img"): "StableDiffusion3Pipeline", ("sd3", "img2img"): "StableDiffusion3Img2ImgPipeline",
    ("sd3", "inpaint"): "StableDiffusion3InpaintPipeline",
    ("flux", "txt2img"): "FluxPipeline", ("flux", "img2img"): "FluxImg2ImgPipeline",
    ("flux", "inpaint"): "FluxInpaintPipeline",
}
# samplers per schedule: the anchor's names -> (diffusers scheduler, options); the rest are refused by name
FLOW_SAMPLERS = {"k_euler": ("FlowMatchEulerDiscreteScheduler", {}),
                 "k_heun": ("FlowMatchHeunDiscreteScheduler", {})}
EDM_SAMPLERS = {"k_euler": ("EDMEulerScheduler", {}), "k_dpmpp_2": ("EDMDPMSolverMultistepScheduler", {})}
# FLUX.1 reads this many T5 tokens (BFL: 256 for schnell, 512 for dev); SD 3 reads 256 (diffusers' default)
T5_TOKENS = {"flux-schnell": 256, "flux-dev": 512}


is_new_family = rules.is_new_family


def config_kind(kind: str) -> str:
    """The shipped config folder of a kind (SD 3.5 Large Turbo is SD 3.5 Large's network)."""
    return "sd35-large" if kind == "sd35-large-turbo" else kind


# ----- the config folder

def shipped_t5_tokenizer() -> Path | None:
    folder = CONFIGS_DIR / "t5_tokenizer"
    return folder if all((folder / n).exists() for n in T5_FILES[:2]) else None


def t5_tokenizer_folder(spec: ModelSpec) -> Path | None:
    """The T5 tokenizer to use: the models file's `t5_tokenizer:` folder, else the shipped one."""
    if spec.t5_tokenizer is not None:
        folder = spec.t5_tokenizer
        if not (folder / "tokenizer.json").exists() and not (folder / "spiece.model").exists():
            raise GenerationError(f"model '{spec.name}': t5_tokenizer {folder} holds neither tokenizer.json nor "
                                  "spiece.model (google/t5-v1_1-xxl's tokenizer files)")
        return folder
    return shipped_t5_tokenizer()


def assemble_config(kind: str, cache_root: Path, t5_tokenizer: Path | None = None,
                    source: Path | None = None) -> Path:
    """A diffusers config folder for `kind` under cache_root: the shipped JSON (or the models file's
    `config:` folder), CLIP's vocabulary in each CLIP tokenizer folder and the T5 tokenizer files in the
    T5 one (left out when there are none: SD 3 then runs without its third encoder)."""
    import hashlib
    source = source or CONFIGS_DIR / config_kind(kind)
    if not (source / "model_index.json").exists():
        raise GenerationError(f"no config for kind '{kind}' at {source} (a folder with model_index.json)")
    key = f"{source.resolve()}|{(t5_tokenizer or shipped_t5_tokenizer() or Path('-')).resolve()}"
    tag = hashlib.sha256(key.encode()).hexdigest()[:12]
    target = cache_root / f"{config_kind(kind)}-{tag}"
    if (target / "model_index.json").exists():
        return target
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    index = json.loads((source / "model_index.json").read_text())
    t5 = t5_tokenizer or shipped_t5_tokenizer()
    for name, value in index.items():
        if not (isinstance(value, list) and len(value) == 2 and value[1]):
            continue
        if value[1] == "CLIPTokenizer":
            (tmp / name).mkdir(exist_ok=True)
            for f in ("vocab.json", "merges.txt"):
                shutil.copy(CONFIGS_DIR / "clip_tokenizer" / f, tmp / name / f)
        elif value[1].startswith("T5Tokenizer") and t5 is not None:
            (tmp / name).mkdir(exist_ok=True)
            for f in t5.iterdir():
                if f.name in T5_FILES + ("spiece.model",):
                    shutil.copy(f, tmp / name / f.name)
    try:
        tmp.rename(target)
    except OSError:  # another process got there first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# ----- pipeline classes

def pipeline_class(kind: str, mode: str):
    import diffusers
    return getattr(diffusers, PIPELINES[(family_of(kind), mode)])


# ----- loading the parts

def _part_file(spec: ModelSpec, key: str, want: str) -> Path | None:
    path = getattr(spec, key, None) if key != "vae" else (Path(spec.vae) if spec.vae else None)
    if path is None:
        return None
    if not path.is_file():
        raise GenerationError(f"model '{spec.name}': {key} {path} does not exist (fix '{key}' in the models file)")
    try:
        part = detect_part(path)
    except NotAModel as e:
        raise GenerationError(f"model '{spec.name}': {key} {path} is {e}") from None
    if not part_fits(part.part, want):
        raise GenerationError(f"model '{spec.name}': {key} {path} is {part.note}, not a {PART_NAMES[want]}")
    if part.layout == "gguf":
        raise GenerationError(f"model '{spec.name}': {key} {path} is a GGUF text encoder, which diffusers does not "
                              "load; use the .safetensors file (t5xxl_fp16 or t5xxl_fp8_e4m3fn)")
    return path


def load_state(path: Path, dtype, strip: tuple[str, ...] = ()) -> dict:
    """A safetensors file's tensors, each cast to dtype as it is read (no second full copy)."""
    from safetensors import safe_open
    out = {}
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():
            name = key
            for p in strip:
                if name.startswith(p):
                    name = name[len(p):]
                    break
            out[name] = f.get_tensor(key).to(dtype)
    return out


def text_encoder_from_file(cls, config_dir: Path, path: Path, dtype, strip: tuple[str, ...] = ()):
    """A transformers text encoder (CLIP or T5) built from its config with no weights allocated, then
    given the file's tensors (ComfyUI's clip_l / clip_g / t5xxl layouts: transformers' own names)."""
    from accelerate import init_empty_weights
    config = cls.config_class.from_pretrained(str(config_dir))
    with init_empty_weights():
        model = cls(config)
    state = load_state(path, dtype, strip)
    wanted = model.state_dict()
    if not any(k in wanted for k in state) and any(k.startswith("text_model.") for k in state):
        state = {k.removeprefix("text_model."): v for k, v in state.items()}  # transformers >= 5.6 names
    if "shared.weight" in state and "encoder.embed_tokens.weight" in wanted:
        state.setdefault("encoder.embed_tokens.weight", state["shared.weight"])
    missing = [k for k in wanted if k not in state]
    if missing:
        raise GenerationError(f"{path} lacks {len(missing)} of {cls.__name__}'s tensors (like {missing[0]})")
    model.load_state_dict({k: state[k] for k in wanted}, assign=True, strict=True)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    return model.to(dtype).eval().requires_grad_(False)


def load_pipeline(spec: ModelSpec, kind: str, found: Detected | None, dtype, cache_root: Path, t5_dtype=None):
    """The txt2img pipeline of an SD 3 or FLUX.1 model: the checkpoint's own parts where it has them,
    the models file's encoder and VAE files for the rest. One line when a needed part is missing.
    `t5_dtype`: T5-XXL from its own file in another precision (bfloat16: 9.5 GB instead of 19 on a CPU
    running float32; encode the prompt, cast the embeddings, then release it)."""
    family = family_of(kind)
    bundled = found.bundled if found is not None else ()
    if family == "sd3" and spec.weights.suffix.lower() == ".gguf":
        raise GenerationError(f"model '{spec.name}': SD 3 GGUF transformers are not supported yet; use the "
                              ".safetensors file")
    t5_tok = t5_tokenizer_folder(spec)
    config = assemble_config(kind, cache_root, t5_tok, spec.config)
    parts = {"clip_l": _part_file(spec, "clip_l", "clip_l"), "clip_g": _part_file(spec, "clip_g", "clip_g"),
             "t5xxl": _part_file(spec, "t5xxl", "t5xxl"), "vae": _part_file(spec, "vae", "vae")}
    needed = ("clip_l", "clip_g") if family == "sd3" else ("clip_l", "t5xxl", "vae")
    if family == "sd3" and "vae" not in bundled:
        needed += ("vae",)
    lacking = [p for p in needed if p not in bundled and parts[p] is None]
    if lacking:
        what = ", ".join(f"'{p}:' ({PART_NAMES[p]})" for p in lacking)
        raise GenerationError(f"model '{spec.name}' ({KIND_NAMES[kind]}) has no {' or '.join(lacking)} in "
                              f"{spec.weights.name}: name the file{'s' if len(lacking) > 1 else ''} in the models "
                              f"file: {what}")
    use_t5 = "t5xxl" in bundled or parts["t5xxl"] is not None
    if use_t5 and t5_tok is None:
        raise GenerationError(f"model '{spec.name}': no T5 tokenizer: give 't5_tokenizer:' (a folder with "
                              "google/t5-v1_1-xxl's tokenizer.json or spiece.model) in the models file"
                              + ("" if family == "flux" else ", or leave 't5xxl' out to run on CLIP alone"))
    if family == "sd3":
        return _load_sd3(spec, kind, bundled, parts, use_t5, dtype, config, t5_dtype or dtype)
    return _load_flux(spec, kind, bundled, parts, dtype, config, t5_dtype or dtype)


def _transformer_kwargs(path: Path, dtype) -> dict:
    if path.suffix.lower() != ".gguf":
        return {"torch_dtype": dtype}
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise GenerationError(f"{path.name} is a GGUF file: it needs the 'gguf' package (pip install gguf)") \
            from None
    from diffusers import GGUFQuantizationConfig
    return {"quantization_config": GGUFQuantizationConfig(compute_dtype=dtype), "torch_dtype": dtype}


def _load_sd3(spec, kind, bundled, parts, use_t5, dtype, config: Path, t5_dtype):
    import diffusers
    from transformers import CLIPTextModelWithProjection, T5EncoderModel
    extra = {}
    if "clip_l" not in bundled:
        extra["text_encoder"] = text_encoder_from_file(CLIPTextModelWithProjection, config / "text_encoder",
                                                       parts["clip_l"], dtype)
    if "clip_g" not in bundled:
        extra["text_encoder_2"] = text_encoder_from_file(CLIPTextModelWithProjection, config / "text_encoder_2",
                                                         parts["clip_g"], dtype)
    if not use_t5:
        extra.update(text_encoder_3=None, tokenizer_3=None)   # CLIP only: diffusers runs SD 3 without T5
    elif "t5xxl" not in bundled:
        extra["text_encoder_3"] = text_encoder_from_file(T5EncoderModel, config / "text_encoder_3",
                                                         parts["t5xxl"], t5_dtype)
    if parts["vae"] is not None:
        extra["vae"] = diffusers.AutoencoderKL.from_single_file(str(parts["vae"]), config=str(config), subfolder="vae",
                                                                local_files_only=True, torch_dtype=dtype)
    return diffusers.StableDiffusion3Pipeline.from_single_file(str(spec.weights), config=str(config),
                                                               local_files_only=True, torch_dtype=dtype, **extra)


def _load_flux(spec, kind, bundled, parts, dtype, config: Path, t5_dtype):
    import diffusers
    from transformers import (
        CLIPTextModel,
        CLIPTokenizer,
        T5EncoderModel,
        T5TokenizerFast,
    )
    if bundled:  # an all-in-one file: diffusers reads every part from it
        extra = {}
        if parts["vae"] is not None:
            extra["vae"] = diffusers.AutoencoderKL.from_single_file(str(parts["vae"]), config=str(config),
                                                                    subfolder="vae", local_files_only=True,
                                                                    torch_dtype=dtype)
        return diffusers.FluxPipeline.from_single_file(str(spec.weights), config=str(config), local_files_only=True,
                                                       torch_dtype=dtype, **extra)
    transformer = diffusers.FluxTransformer2DModel.from_single_file(
        str(spec.weights), config=str(config), subfolder="transformer", local_files_only=True,
        **_transformer_kwargs(spec.weights, dtype))
    vae = diffusers.AutoencoderKL.from_single_file(str(parts["vae"]), config=str(config), subfolder="vae",
                                                   local_files_only=True, torch_dtype=dtype)
    return diffusers.FluxPipeline(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler.from_pretrained(str(config), subfolder="scheduler"),
        vae=vae, transformer=transformer,
        text_encoder=text_encoder_from_file(CLIPTextModel, config / "text_encoder", parts["clip_l"], dtype),
        tokenizer=CLIPTokenizer.from_pretrained(str(config / "tokenizer")),
        text_encoder_2=text_encoder_from_file(T5EncoderModel, config / "text_encoder_2", parts["t5xxl"], t5_dtype),
        tokenizer_2=T5TokenizerFast.from_pretrained(str(config / "tokenizer_2")))


# ----- schedules

def apply_schedule(pipe, prediction: str | None, zero_snr: bool) -> None:
    """v-prediction and zero terminal SNR on an SD 1.x/2.x/XL pipeline's scheduler: diffusers'
    rescale_betas_zero_snr (Lin et al. 2023, what A1111 does with `ztsnr`) with trailing timesteps."""
    options = {}
    wanted = {"v": "v_prediction", "epsilon": "epsilon"}.get(prediction or "")
    if wanted and pipe.scheduler.config.get("prediction_type") != wanted:
        options["prediction_type"] = wanted
    if zero_snr:
        options.update(rescale_betas_zero_snr=True, timestep_spacing="trailing")
    if options:
        pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, **options)


ZERO_SNR_SAMPLERS = rules.ZERO_SNR_SCHEDULERS
_SIGMA_OPTIONS = {"karras": "use_karras_sigmas", "exponential": "use_exponential_sigmas", "beta": "use_beta_sigmas"}


def _schedule_name(kind: str, schedule: str | None) -> str:
    found = find_schedule(schedule) if schedule else None
    name = found.name if found else "automatic"
    return rules.default_schedule(kind) if name == "automatic" else name


def scheduler_for(kind: str, sampler: str, base_config, zero_snr: bool = False, plan_scheduler: str = "",
                  schedule: str | None = None, plan_options: dict | None = None):
    """The scheduler a sampler name becomes for the families with their own schedules (flow matching,
    EDM), from the model's scheduler config (shift, dynamic shift, sigma_data...) with the schedule's
    sigmas; for a zero-SNR model, the sampler's own scheduler with its betas rescaled and trailing timesteps
    (the config of a scheduler that takes no such option, PNDM's, does not keep them), and a sampler whose
    diffusers scheduler cannot rescale is refused (it would run the wrong schedule). Returns None where the
    ordinary table applies."""
    import diffusers
    why = rules.sampler_refusal(kind, sampler, schedule, zero_snr)
    if why is None and zero_snr and plan_scheduler and plan_scheduler not in ZERO_SNR_SAMPLERS:
        why = (f"sampler '{sampler}' cannot run a zero-terminal-SNR schedule in diffusers; use k_euler, "
               "k_euler_a, ddim or k_dpmpp_2")
    if why:
        raise GenerationError(why)
    where = rules.schedule_family(kind)
    if where == "ddpm":
        if not (zero_snr and plan_scheduler):
            return None
        options = {"timestep_spacing": "trailing", **(plan_options or {}), "rescale_betas_zero_snr": True}
        return getattr(diffusers, plan_scheduler).from_config(base_config, **options)
    base = find_sampler(sampler)
    base = find_sampler(base.a1111 or base.name) if base.schedule else base
    name, options = (FLOW_SAMPLERS if where == "flow" else EDM_SAMPLERS)[base.name]
    config = {k: v for k, v in dict(base_config).items() if not k.startswith("_")}
    chosen = _schedule_name(kind, schedule or find_sampler(sampler).schedule)
    if where == "flow" and chosen in _SIGMA_OPTIONS:
        options = dict(options, **{_SIGMA_OPTIONS[chosen]: True})
    elif where == "edm":
        options = dict(options, sigma_schedule="exponential" if chosen == "exponential" else "karras")
    return getattr(diffusers, name).from_config(config, **options)


def flow_sigmas(kind: str, schedule: str | None, steps: int):
    """The sigmas (before the model's shift) a flow model's pipeline gets for a schedule, or None for the
    scheduler's own: Simple is FLUX.1's (BFL's reference: 1 down to 1/steps, ComfyUI's simple), Uniform SD
    3's (the scheduler's: 1 down to 1/1000); Karras, exponential and beta reshape the family's own."""
    import numpy as np
    name = _schedule_name(kind, schedule)
    if name in _SIGMA_OPTIONS:
        name = rules.default_schedule(kind)
    if name in ("simple", "sgm_uniform"):
        return np.linspace(1.0, 1 / steps, steps)
    if family_of(kind) == "flux":   # uniform / normal: the pipeline would give FLUX.1 Simple
        return np.linspace(1.0, 1 / 1000, steps)
    return None


# ----- a request as pipeline arguments

def refusal(kind: str, *, negative: str, cfg: float, clip_skip: int | None, guidance: float | None = None,
            mode: str = "txt2img") -> str | None:
    """One line for a switch the family does not take (None when all apply)."""
    from ..line.request import DreamRequest
    request = DreamRequest(prompt=f"x [{negative}]" if negative.strip() else "x", cfg_scale=cfg, guidance=guidance)
    return rules.refusal(kind, request, clip_skip=clip_skip)


def call_args(kind: str, *, prompt: str, negative: str, steps: int, cfg: float, width: int, height: int,
              clip_skip: int | None = None, guidance: float | None = None) -> dict:
    """Pipeline keyword arguments for SD 3 / FLUX.1 (prompts as text: their pipelines encode them)."""
    args = dict(prompt=prompt, num_inference_steps=steps, width=width, height=height)
    args.update(_guidance_args(kind, cfg, guidance))
    if family_of(kind) == "sd3":
        args["negative_prompt"] = negative or None
        if clip_skip not in (None, 1):
            args["clip_skip"] = clip_skip - 1   # diffusers counts layers skipped; A1111 counts from 1
        return args
    args["max_sequence_length"] = T5_TOKENS.get(kind, 512)
    if cfg > 1 and negative:
        args["negative_prompt"] = negative
    return args


def _guidance_args(kind: str, cfg: float, guidance: float | None) -> dict:
    """SD 3: CFG (off at -C 1 or below). FLUX.1: -C is true CFG (two passes a step above 1); dev's distilled
    guidance is --guidance (3.5 when not given), schnell has none."""
    if family_of(kind) == "sd3":
        return {"guidance_scale": cfg if cfg > 1 else 0.0}
    return {"true_cfg_scale": cfg,
            "guidance_scale": (rules.DEFAULT_GUIDANCE if guidance is None else guidance) if kind == "flux-dev" else 0.0}


def latent_shape(kind: str, width: int, height: int) -> tuple[int, int, int]:
    """(channels, h, w) of the noise dreamshell draws per image (as ComfyUI and Forge draw it: 16 latent
    channels at 1/8 size for SD 3 and FLUX.1; FLUX.1 packs it 2x2 into its sequence afterwards)."""
    channels = 16 if is_new_family(kind) else 4
    return channels, height // 8, width // 8


def pack_latents(pipe, kind: str, noise):
    """FLUX.1 takes its latents packed (batch, h/2 * w/2, 64); SD 3 as they are."""
    if family_of(kind) != "flux":
        return noise
    b, c, h, w = noise.shape
    return pipe._pack_latents(noise, b, c, h, w)


# ----- loading through the generator

def load(gen, spec: ModelSpec, kind: str, found: Detected | None):
    """The SD 3 / FLUX.1 pipeline for the generator `gen`: T5-XXL in bfloat16 on a CPU running float32
    (9.5 GB instead of 19; its embeddings are cast back), configs assembled in the cache folder."""
    from ..weights.hashing import cache_dir
    torch = gen.torch
    t5_dtype = torch.bfloat16 if gen.device == "cpu" and gen.dtype == torch.float32 else None
    pipe = load_pipeline(spec, kind, found, gen.dtype, cache_dir() / "family-configs", t5_dtype=t5_dtype)
    pipe._ds_family = FamilyState(spec, kind, found, t5_dtype)
    if spec.vae and Path(spec.vae).is_file():   # the models file's `vae:` is this model's own: never loaded twice
        key = str(Path(spec.vae).resolve())
        gen.adapters.base_vae = pipe.vae
        gen.adapters.vaes[key], gen.adapters.vae_key = pipe.vae, key
    return pipe


class FamilyState:
    """What a loaded SD 3 / FLUX.1 model keeps beside its pipeline: how to load T5 again after --lowvram
    released it on a CPU, and the last prompts' embeddings (a -n 8 line encodes once)."""

    def __init__(self, spec, kind, found, t5_dtype):
        self.spec, self.kind, self.found, self.t5_dtype = spec, kind, found, t5_dtype
        self.cache: dict = {}

    def remember(self, key, value) -> None:
        if len(self.cache) >= 4:
            self.cache.pop(next(iter(self.cache)))
        self.cache[key] = value


def state_of(gen) -> FamilyState:
    return gen._pipes["txt2img"]._ds_family


T5_SLOT = {"sd3": "text_encoder_3", "flux": "text_encoder_2"}


def memory_modes(gen, pipe) -> None:
    """--lowvram for the new families. CUDA/MPS: model CPU offload, or sequential offload (layer by layer)
    when the largest part would not fit in 80% of the GPU (FLUX.1's 12 B transformer at 16 bits is 24 GB).
    CPU: T5-XXL is released after each new prompt is encoded and read from its file again for the next
    (9.5 GB less while the transformer runs)."""
    from . import loading
    if not (gen.lowvram and gen.device in ("cuda", "mps")):
        loading.memory_modes(pipe, gen.device, False)
        return
    total = gen.torch.cuda.get_device_properties(0).total_memory if gen.device == "cuda" else 0
    if offload_mode(largest_part_bytes(pipe), total) == "sequential":
        pipe.enable_sequential_cpu_offload(device=gen.device)
    else:
        pipe.enable_model_cpu_offload(device=gen.device)


def largest_part_bytes(pipe) -> int:
    sizes = [sum(p.numel() * p.element_size() for p in c.parameters())
             for c in pipe.components.values() if hasattr(c, "parameters")]
    return max(sizes, default=0)


def offload_mode(largest: int, gpu_total: int) -> str:
    """'sequential' when the largest model would not fit in 80% of the GPU (model offload moves whole
    models), else 'model'; 'model' when the GPU's size is not known (MPS)."""
    return "sequential" if gpu_total and largest > 0.8 * gpu_total else "model"


def _release_t5(gen) -> None:
    slot = T5_SLOT[family_of(gen.kind)]
    for pipe in gen._pipes.values():
        if getattr(pipe, slot, None) is not None:
            setattr(pipe, slot, None)
    import gc
    gc.collect()


def _restore_t5(gen, state: FamilyState) -> None:
    """T5 read again from its file (after --lowvram released it on a CPU)."""
    from transformers import T5EncoderModel
    slot = T5_SLOT[family_of(gen.kind)]
    base = gen._pipes["txt2img"]
    if getattr(base, slot, None) is not None or not state.spec.t5xxl:
        return
    config = assemble_config(state.kind, _config_root(), t5_tokenizer_folder(state.spec), state.spec.config)
    encoder = text_encoder_from_file(T5EncoderModel, config / slot, state.spec.t5xxl, state.t5_dtype or gen.dtype)
    for pipe in gen._pipes.values():
        setattr(pipe, slot, encoder)


def _config_root() -> Path:
    from ..weights.hashing import cache_dir
    return cache_dir() / "family-configs"


def _lowvram_cpu(gen) -> bool:
    return gen.lowvram and gen.device == "cpu"


# ----- prompts

def encode(gen, pipe, request, negative_too: bool) -> dict:
    """The prompt's embeddings for SD 3 / FLUX.1 (dreamshell's blends `a:0.7 b:0.3` weight them), the
    negative's when CFG runs; computed once for the last few prompts. Attention syntax is not applied
    (prompt_notes says so). Embeddings come back in the transformer's dtype (T5 may run in bfloat16)."""
    from ..line.prompt import split_prompt
    torch, kind = gen.torch, gen.kind
    state = state_of(gen)
    parts = split_prompt(request.prompt)
    positives = parts.normalized(request.skip_normalize)
    texts = [t for t, _ in positives] + ([parts.negative] if negative_too else [])
    lora_key = tuple(sorted((u.name, u.weight) for u in gen._files.loras))
    key = (tuple(texts), request.clip_skip, lora_key, negative_too)
    if key in state.cache:
        return state.cache[key]
    if _lowvram_cpu(gen):
        _restore_t5(gen, state)
    base = gen._pipes["txt2img"]
    with torch.no_grad():
        if family_of(kind) == "sd3":
            clip_skip = request.clip_skip - 1 if request.clip_skip not in (None, 1) else None
            embeds, _, pooled, _ = base.encode_prompt(prompt=texts, prompt_2=None, prompt_3=None, device=gen.device,
                                                      num_images_per_prompt=1, do_classifier_free_guidance=False,
                                                      clip_skip=clip_skip, max_sequence_length=SD3_T5_TOKENS)
        else:
            embeds, pooled, _ = base.encode_prompt(prompt=texts, prompt_2=None, device=gen.device,
                                                   num_images_per_prompt=1, max_sequence_length=T5_TOKENS[kind])
    embeds, pooled = embeds.to(gen.dtype), pooled.to(gen.dtype)
    n = len(positives)
    out = {"prompt_embeds": sum(w * embeds[i:i + 1] for i, (_, w) in enumerate(positives)),
           "pooled_prompt_embeds": sum(w * pooled[i:i + 1] for i, (_, w) in enumerate(positives))}
    if negative_too:
        out.update(negative_prompt_embeds=embeds[n:n + 1], negative_pooled_prompt_embeds=pooled[n:n + 1])
    state.remember(key, out)
    if _lowvram_cpu(gen) and state.spec.t5xxl:   # a T5 of its own file can be read again; one inside stays
        _release_t5(gen)
    return out


SD3_T5_TOKENS = 256
_ATTENTION = re.compile(r"[()]|\.(and|blend|swap)\(|[\w)]\+|[\w)]-+(?=[\s,]|$)")


def prompt_notes(gen, prompt: str, files) -> list[str]:
    """Notes on a prompt for SD 3 / FLUX.1 before its first image: its LoRAs loaded (and their layers
    without a place named), attention weights not applied, what CLIP and T5 read of a long prompt."""
    from ..line.prompt import split_prompt
    notes = []
    pipe = gen._pipes["txt2img"]
    notes += gen.adapters.load_loras(pipe, gen.files(prompt, None, files).loras, gen.spec.name)
    parts = split_prompt(prompt)
    texts = [t for t, _ in parts.positive] + ([parts.negative] if parts.negative else [])
    name = KIND_NAMES.get(gen.kind, gen.kind)
    if any(_ATTENTION.search(t) for t in texts):
        notes.append(f"note: {name} reads the prompt as plain text: attention weights such as (word:1.2) or "
                     "word+ are not applied (the brackets and signs are read as they stand)")
    t5_tokens = T5_TOKENS.get(gen.kind, SD3_T5_TOKENS)
    for text in texts:
        clip = len(pipe.tokenizer(text, add_special_tokens=False).input_ids)
        t5 = _t5_count(pipe, text)
        if t5 is not None and t5 > t5_tokens - 1:
            notes.append(f"note: '{text[:30]}...' is {t5} T5 tokens; {name} reads the first {t5_tokens - 1} "
                         "(the rest is cut)")
        elif clip > 75:
            notes.append(f"note: '{text[:30]}...' is {clip} CLIP tokens: CLIP reads the first 75 (its pooled "
                         f"vector), T5 reads it all (up to {t5_tokens - 1})")
    return notes


def _t5_count(pipe, text: str) -> int | None:
    tokenizer = getattr(pipe, "tokenizer_3", None) or getattr(pipe, "tokenizer_2", None)
    if tokenizer is None or "T5" not in type(tokenizer).__name__:
        return None
    return len(tokenizer(text, add_special_tokens=False).input_ids)


# ----- one image

def check_files(gen, files) -> None:
    """Before a line's files are loaded into an SD 3 / FLUX.1 model: no textual-inversion embeddings."""
    if files is not None and files.embeddings:
        why = rules.refusal(gen.kind, _probe(), embeddings=tuple(u.name for u in files.embeddings))
        raise GenerationError(why)


def _probe():
    from ..line.request import DreamRequest
    return DreamRequest(prompt="x")


def generate_one(gen, request, init_image, mask, on_step, should_stop, on_preview, preview_every,
                 output_type: str = "pil", steps_before: int = 0, steps_all: int | None = None):
    """One SD 3 / FLUX.1 image (txt2img, img2img or inpainting) for a resolved request: the family's
    refusals, its scheduler and sigmas, the prompt encoded once, the seed's noise (16 channels; packed
    2x2 for FLUX.1), CFG as the family takes it; progress, previews, Ctrl-C and NaN as for any model."""
    import contextlib

    from . import loading
    torch, kind = gen.torch, gen.kind
    why = rules.refusal(kind, request, zero_snr=False, clip_skip=request.clip_skip)
    if why:
        raise GenerationError(why)
    mode = "inpaint" if mask is not None else "img2img" if init_image is not None else "txt2img"
    pipe = gen._pipe(mode)
    pipe.scheduler = gen._scheduler(request.sampler, request.schedule)
    cfg = request.cfg_scale
    negative_too = cfg > 1
    args = dict(encode(gen, pipe, request, negative_too), num_inference_steps=request.steps,
                output_type=output_type, generator=torch.Generator("cpu").manual_seed(request.seed))
    args.update(_guidance_args(kind, cfg, request.guidance))
    sigmas = flow_sigmas(kind, request.schedule, request.steps)
    if sigmas is not None:
        args["sigmas"] = sigmas
    if family_of(kind) == "flux":
        args["max_sequence_length"] = T5_TOKENS[kind]
    if mode == "txt2img":
        total = request.steps
        args.update(width=request.width, height=request.height,
                    latents=pack_latents(pipe, kind, gen.initial_latents(request)))
    else:
        total = max(1, int(request.steps * request.strength))
        args.update(image=init_image, strength=request.strength, width=request.width, height=request.height)
        if mode == "inpaint":
            args["mask_image"] = mask
    tap = FlowPreviewTap(gen.latent_rgb, on_preview, preview_every, pipe, kind, request) \
        if on_preview is not None else None

    def step_end(_pipe, step, _timestep, kwargs):
        if should_stop is not None and should_stop():
            raise Interrupted()
        if on_step is not None:
            on_step(steps_before + step + 1, steps_all or total)
        if tap is not None:
            tap(step + 1, _pipe.num_timesteps, kwargs["latents"])
        if step + 1 == _pipe.num_timesteps and torch.isnan(kwargs["latents"]).any():
            raise GenerationError(gen._nan_message(request))
        return kwargs
    args["callback_on_step_end"] = step_end
    with contextlib.ExitStack() as stack:
        if tap is not None:
            stack.enter_context(tap.attached(pipe.scheduler))
        stack.enter_context(loading.stop_checks(pipe.vae, should_stop))
        return gen._run(pipe, args, request)[0]


def generate_each(gen, requests, on_step, should_stop) -> list:
    """Several images of one line, one call each (the families' pipelines draw one noise per call)."""
    return [generate_one(gen, r, None, None, on_step, should_stop, None, 1) for r in requests]


class FlowPreviewTap:
    """Live previews for SD 3 / FLUX.1: the flow prediction of the clean latent (x - sigma * v), unpacked
    from FLUX.1's 2x2 sequence, through the family's 16-channel projection (preview.py)."""

    def __init__(self, projection, on_preview, every, pipe, kind, request):
        from .preview import PreviewTap
        self.inner = PreviewTap(projection, on_preview, every)
        self.pipe, self.kind, self.request = pipe, kind, request

    @contextlib.contextmanager
    def attached(self, scheduler):
        original, had_own = scheduler.step, "step" in vars(scheduler)
        tap = self.inner

        def step(model_output, timestep, sample, *args, return_dict: bool = True, **kwargs):
            index = scheduler.step_index if scheduler.step_index is not None else 0
            sigma = scheduler.sigmas[index] if index < len(scheduler.sigmas) else 0.0
            out = original(model_output, timestep, sample, *args, return_dict=True, **kwargs)
            tap.predicted = self._unpacked(sample - sigma * model_output)
            return out if return_dict else out.to_tuple()

        scheduler.step = step
        try:
            yield self
        finally:
            if had_own:
                scheduler.step = original
            else:
                del scheduler.step

    def _unpacked(self, latents):
        if family_of(self.kind) != "flux" or latents.ndim != 3:
            return latents
        return self.pipe._unpack_latents(latents, self.request.height, self.request.width, self.pipe.vae_scale_factor)

    def __call__(self, step: int, total: int, latents) -> None:
        self.inner(step, total, self._unpacked(latents))


def rescale_args(gen, pipe, request) -> dict:
    """`--cfg_rescale` as diffusers' guidance_rescale, for the SD 1.x/2.x/XL pipelines that take it; one
    line for those that do not (SD 1.x/2.x img2img and inpainting)."""
    if not request.cfg_rescale:
        return {}
    import inspect
    if "guidance_rescale" not in inspect.signature(type(pipe).__call__).parameters:
        raise GenerationError(f"--cfg_rescale: diffusers' {type(pipe).__name__} has no CFG rescale; drop it "
                              "for this line")
    return {"guidance_rescale": request.cfg_rescale}
