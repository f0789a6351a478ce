"""The families beyond SD 1.x/2.x/XL: SDXL v-prediction with zero terminal SNR, Playground v2.5 (EDM),
SD 3 / 3.5 and FLUX.1 (flow matching). What each needs from diffusers, offline: the config folder
assembled from the shipped configs (CLIP and T5 tokenizers), the pipeline classes, the parts loaded from
the files people keep (one checkpoint, or a GGUF transformer with ComfyUI's clip_l / clip_g / t5xxl / ae
files), the samplers each schedule can run, and the pipeline arguments a request becomes.

Imports torch and diffusers inside the functions; the generator calls these from `load` and `generate`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

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
from .protocols import GenerationError

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"
T5_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
NEW_FAMILIES = ("sd3", "flux")
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


def is_new_family(kind: str) -> bool:
    return family_of(kind) in NEW_FAMILIES


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


ZERO_SNR_SAMPLERS = ("DDIMScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
                     "DPMSolverMultistepScheduler", "UniPCMultistepScheduler", "DDPMScheduler", "LCMScheduler",
                     "TCDScheduler")


def scheduler_for(kind: str, sampler: str, base_config, zero_snr: bool = False, plan_scheduler: str = ""):
    """The scheduler a sampler name becomes for the families with their own schedules (flow matching,
    EDM), from the model's scheduler config (shift, dynamic shift, sigma_data...). For a zero-SNR model,
    a sampler whose diffusers scheduler cannot rescale its betas is refused (it would run the wrong
    schedule). Returns None where the ordinary table applies."""
    import diffusers
    family = family_of(kind)
    if family in NEW_FAMILIES or kind == "sdxl-playground":
        table = EDM_SAMPLERS if kind == "sdxl-playground" else FLOW_SAMPLERS
        if sampler not in table:
            raise GenerationError(f"sampler '{sampler}' does not run {KIND_NAMES[kind]} "
                                  f"({'EDM' if table is EDM_SAMPLERS else 'flow-matching'} schedule); "
                                  f"use {' or '.join(table)}")
        name, options = table[sampler]
        config = {k: v for k, v in dict(base_config).items() if not k.startswith("_")}
        if name == "FlowMatchHeunDiscreteScheduler" and config.get("use_dynamic_shifting"):
            raise GenerationError(f"sampler 'k_heun' does not run {KIND_NAMES[kind]} (its shift depends on the "
                                  "image size, which only k_euler follows); use k_euler")
        return getattr(diffusers, name).from_config(config, **options)
    if zero_snr and plan_scheduler and plan_scheduler not in ZERO_SNR_SAMPLERS:
        raise GenerationError(f"sampler '{sampler}' cannot run a zero-terminal-SNR schedule in diffusers; "
                              "use k_euler, k_euler_a, ddim or k_dpmpp_2")
    return None


# ----- a request as pipeline arguments

def refusal(kind: str, *, negative: str, cfg: float, clip_skip: int | None, guidance: float | None = None,
            mode: str = "txt2img") -> str | None:
    """One line for a switch the family does not take (None when all apply)."""
    name = KIND_NAMES.get(kind, kind)
    if family_of(kind) == "flux":
        if clip_skip not in (None, 1):
            return f"{name} takes no clip skip (its prompt goes through T5 and CLIP's pooled output)"
        if negative.strip() and cfg <= 1:
            return (f"{name} ignores a negative prompt unless -C is above 1 (true CFG, twice the time per "
                    "step); drop the [negative] part or raise -C")
        if guidance is not None and kind == "flux-schnell":
            return f"{name} has no distilled guidance (only dev does): drop --guidance"
    elif guidance is not None:
        return f"--guidance (Forge's Distilled CFG Scale) is for FLUX.1 dev; {name} uses -C"
    if kind == "sd35-large-turbo" and negative.strip() and cfg <= 1:
        return f"{name} runs without CFG at -C 1 and ignores a negative prompt; drop it or raise -C"
    return None


def call_args(kind: str, *, prompt: str, negative: str, steps: int, cfg: float, width: int, height: int,
              clip_skip: int | None = None, guidance: float | None = None) -> dict:
    """Pipeline keyword arguments for SD 3 / FLUX.1 (prompts as text: their pipelines encode them)."""
    family = family_of(kind)
    args = dict(prompt=prompt, num_inference_steps=steps, width=width, height=height)
    if family == "sd3":
        args.update(guidance_scale=cfg if cfg > 1 else 0.0, negative_prompt=negative or None)
        if clip_skip not in (None, 1):
            args["clip_skip"] = clip_skip - 1   # diffusers counts layers skipped; A1111 counts from 1
        return args
    args.update(max_sequence_length=T5_TOKENS.get(kind, 512), true_cfg_scale=cfg)
    args["guidance_scale"] = (3.5 if guidance is None else guidance) if kind == "flux-dev" else 0.0
    if cfg > 1 and negative:
        args["negative_prompt"] = negative
    return args


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

