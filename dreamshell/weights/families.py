"""What each model family takes from a line (no torch): the samplers and schedules its scheduler runs,
the schedule it runs by default, the switches that do not apply to it, and which family a LoRA file is
for. The planner answers a line with these words when it is typed; the engine says the same when the
line runs (engines/families.py).

The families: SD 1.x / 2.x / XL (DDPM schedules; v-prediction and zero terminal SNR where the model says
so), Playground v2.5 (SDXL on an EDM schedule), SD 3 / 3.5 and FLUX.1 (flow matching: their prompt goes
through CLIP and T5, their latents have 16 channels in 2x2 patches).
"""

from __future__ import annotations

from ..line.hires import DEFAULT_UPSCALER, target_size
from ..line.prompt import PromptError, split_prompt
from ..line.request import DreamRequest
from ..line.samplers import SamplerError, find_sampler, find_schedule
from ..line.samplers import plan as scheduler_plan
from .checkpoint import KIND_NAMES, family_of
from .errors import NotAModel
from .safetensors import read_header

DIFFUSERS_LORA_FILE = "pytorch_lora_weights.safetensors"

NEW_FAMILIES = ("sd3", "flux")
DEFAULT_GUIDANCE = 3.5            # FLUX.1 dev's distilled guidance (BFL's reference, Forge's and ComfyUI's default)
PATCH = 16                        # SD 3 and FLUX.1: 8x VAE, 2x2 patches: sides in multiples of 16

# samplers per schedule family (dreamshell's names); the rest are refused by name
FLOW_SAMPLERS = ("k_euler", "k_heun")
EDM_SAMPLERS = ("k_euler", "k_dpmpp_2")
# schedules (line/samplers names) a flow-matching model runs: the sigmas FLUX.1's pipeline takes
# (Simple: ComfyUI's and Forge's default for it, BFL's reference), the scheduler's own (Uniform: diffusers'
# and Stability's reference for SD 3), and diffusers' Karras, exponential and beta sigmas of the same range
FLOW_SCHEDULES = ("automatic", "simple", "sgm_uniform", "uniform", "normal", "karras", "exponential", "beta")
EDM_SCHEDULES = ("automatic", "karras", "exponential")
HEUN_SCHEDULES = ("automatic", "uniform", "normal")    # SD 3's own sigmas: diffusers' flow Heun takes no others
# diffusers schedulers that take rescale_betas_zero_snr (the rest would run the wrong schedule)
ZERO_SNR_SCHEDULERS = ("DDIMScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
                       "DPMSolverMultistepScheduler", "UniPCMultistepScheduler", "DDPMScheduler", "LCMScheduler",
                       "TCDScheduler")


def is_new_family(kind: str) -> bool:
    return family_of(kind or "sd1") in NEW_FAMILIES


def schedule_family(kind: str) -> str:
    """flow (SD 3, FLUX.1), edm (Playground v2.5) or ddpm (SD 1.x/2.x/XL)."""
    if is_new_family(kind):
        return "flow"
    return "edm" if kind == "sdxl-playground" else "ddpm"


def default_schedule(kind: str, zero_snr: bool = False) -> str | None:
    """The schedule a kind runs when a line names none, written into its recipe so that it replays the same
    in A1111/Forge (their `Schedule type`): FLUX.1 Simple, SD 3 Uniform (diffusers' and the model makers'
    reference schedules), Playground's EDM Karras sigmas, a zero-SNR model's trailing timesteps (SGM
    Uniform). None: the model's own scheduler config (SD 1.x/2.x/XL)."""
    family = family_of(kind or "sd1")
    if family == "flux":
        return "simple"
    if family == "sd3":
        return "uniform"
    if kind == "sdxl-playground":
        return "karras"
    return "sgm_uniform" if zero_snr else None


def label(kind: str) -> str:
    return KIND_NAMES.get(kind, kind or "this model")


def sampler_refusal(kind: str, sampler: str | None, schedule: str | None, zero_snr: bool = False) -> str | None:
    """One line when the sampler or schedule does not run the kind's schedule (None when it does)."""
    if not sampler:
        return None
    found = find_sampler(sampler)
    name = found.name if found else sampler
    where = schedule_family(kind)
    if where in ("flow", "edm"):
        allowed = EDM_SAMPLERS if where == "edm" else ("k_euler",) if family_of(kind) == "flux" else FLOW_SAMPLERS
        base = find_sampler(found.a1111 or found.name) if found is not None and found.schedule else found
        what = "flow-matching" if where == "flow" else "EDM"
        if base is None or base.name not in allowed:
            return f"sampler '{name}' does not run {label(kind)} ({what} schedule); use {' or '.join(allowed)}"
        if family_of(kind) == "flux" and base.name == "k_heun":
            return (f"sampler 'k_heun' does not run {label(kind)} (diffusers' flow Heun takes no sigmas of FLUX.1's "
                    "schedule and no size-dependent shift); use k_euler")
        chosen = schedule or (found.schedule if found else None)
        if chosen:
            sched = find_schedule(chosen)
            table = FLOW_SCHEDULES if where == "flow" else EDM_SCHEDULES
            if sched is None or sched.name not in table:
                return (f"the '{sched.a1111 if sched else chosen}' schedule does not run {label(kind)} ({what}); "
                        f"schedules: {', '.join(table)}")
            if base.name == "k_heun" and sched.name not in HEUN_SCHEDULES:
                return (f"sampler 'k_heun' runs {label(kind)} on its own schedule only (diffusers' flow Heun takes no "
                        f"sigmas); use --schedule uniform, or k_euler with '{sched.name}'")
        return None
    if zero_snr:
        try:
            planned = scheduler_plan(sampler, schedule)
        except SamplerError:
            return None     # said elsewhere, in the sampler table's words
        if planned.scheduler not in ZERO_SNR_SCHEDULERS:
            return (f"sampler '{name}' cannot run a zero-terminal-SNR schedule in diffusers; use k_euler, "
                    "k_euler_a, ddim or k_dpmpp_2")
    return None


def refusal(kind: str, request: DreamRequest, *, zero_snr: bool = False, clip_skip: int | None = None,
            loras: tuple = (), embeddings: tuple = ()) -> str | None:
    """One line for the first switch of a resolved request (or one with the model's defaults filled in) that
    `kind` does not take; None when everything applies. `clip_skip` is the one that runs (the line's or the
    model's); `loras` are (name, family or None, kohya layout) triples, `embeddings` the words of the embeddings
    it uses."""
    name, family = label(kind), family_of(kind or "sd1")
    try:
        negative = split_prompt(request.prompt).negative.strip()
    except PromptError:
        negative = ""
    cfg = request.cfg_scale
    why = sampler_refusal(kind, request.sampler, request.schedule, zero_snr)
    if why:
        return why
    if request.guidance is not None and kind != "flux-dev":
        if kind == "flux-schnell":
            return f"{name} has no distilled guidance (only FLUX.1 dev has): drop --guidance"
        return f"--guidance (Forge's Distilled CFG Scale) is for FLUX.1 dev; {name} uses -C"
    for lora, made_for, kohya in loras:
        if made_for and made_for != family:
            return (f"LoRA '{lora}' is for {FAMILY_NAMES.get(made_for, made_for)} models (from its keys); the model "
                    f"is {name}: drop the tag or switch models")
        if family == "sd3" and kohya:
            return (f"LoRA '{lora}' is in kohya's layout (lora_unet_joint_blocks_...), which diffusers does not load "
                    "for SD 3; use the LoRA in diffusers' layout (transformer.transformer_blocks...)")
    if family in NEW_FAMILIES:
        if family == "flux" and clip_skip not in (None, 1):
            return f"{name} takes no clip skip (its prompt goes through T5 and CLIP's pooled output): drop --clip_skip"
        if negative and cfg is not None and cfg <= 1:
            if family == "flux":
                return (f"{name} ignores a negative prompt unless -C is above 1 (true CFG, twice the time per "
                        "step); drop the [negative] part or raise -C")
            return f"{name} runs without CFG at -C {cfg:g} and ignores a negative prompt; drop it or raise -C"
        if request.cfg_rescale:
            return f"--cfg_rescale is for SD 1.x/2.x/XL (v-prediction) models; {name} has no CFG rescale in diffusers"
        if request.seamless:
            return f"--seamless tiles a UNet's convolutions; {name} is a transformer, so it cannot tile"
        if request.control:
            return (f"--control guides a UNet (SD 1.x/2.x/XL ControlNets and T2I-Adapters); {name} has none here: "
                    "drop --control or switch models")
        if request.timesteps:
            return (f"--timesteps lists a UNet schedule's timesteps; {name} is a flow model: use -s and --schedule")
        if embeddings:
            return (f"embedding '{embeddings[0]}' is for SD 1.x/2.x/XL: {name} takes no textual-inversion embeddings "
                    "(rename the file, or use the word in another line)")
        sizes = [(request.width, request.height)]
        if request.hires_fix and request.width and request.height:
            if (request.hires_upscaler or DEFAULT_UPSCALER) == "latent":
                return (f"the hires fix's latent upscaler does not run {name} (packed 16-channel latents); use "
                        "--hires_upscaler lanczos or esrgan")
            sizes.append(target_size(request.width, request.height, request.hires_scale or 2.0))
        for w, h in sizes:
            if w and h and (w % PATCH or h % PATCH):
                return (f"{name} makes sizes in multiples of {PATCH} (2x2 patches of 8x latents): {w}x{h} is not; "
                        f"use {_near(w)} by {_near(h)}")
        return None
    if request.cfg_rescale and family in ("sd1", "sd2") and (request.init_img or request.hires_fix):
        return ("--cfg_rescale with -I or --hires_fix on an SD 1.x/2.x model: diffusers' img2img and inpainting "
                "pipelines for it have no CFG rescale; drop one of them")
    return None


def _near(side: int) -> str:
    low = side // PATCH * PATCH
    return f"{low} or {low + PATCH}" if side % PATCH else str(side)


FAMILY_NAMES = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL", "sd3": "SD 3", "flux": "FLUX.1"}


def check_line(request: DreamRequest, spec, files=None) -> str | None:
    """`refusal` for a request that may still leave values to the model's defaults (`spec`: a ModelSpec):
    its CFG, sampler, size and clip skip as the line will run them; `files` (a library.LineFiles): its
    LoRAs, each for the family its keys say, and its embeddings."""
    if spec is None or not spec.kind:
        return None
    loras = tuple((u.name, *lora_file_info(u.path)) for u in files.loras) if files is not None else ()
    embeddings = tuple(u.name for u in files.embeddings) if files is not None else ()
    filled = request.with_(cfg_scale=spec.cfg_scale if request.cfg_scale is None else request.cfg_scale,
                           sampler=request.sampler or spec.sampler,
                           width=request.width or spec.width, height=request.height or spec.height)
    return refusal(spec.kind, filled, zero_snr=spec.zero_snr, clip_skip=request.clip_skip or spec.clip_skip,
                   loras=loras, embeddings=embeddings)


def family_defaults(request: DreamRequest, spec) -> DreamRequest:
    """A resolved request with what its family runs by default written out (so its recipe replays the same
    elsewhere): the schedule (`default_schedule`) and FLUX.1 dev's distilled guidance."""
    changes = {}
    if request.schedule is None:
        found = find_sampler(request.sampler or "")
        schedule = default_schedule(spec.kind, spec.zero_snr)
        if schedule and not (found is not None and found.schedule):
            changes["schedule"] = schedule
    if spec.kind == "flux-dev" and request.guidance is None:
        changes["guidance"] = DEFAULT_GUIDANCE
    return request.with_(**changes) if changes else request


# ----- which family a LoRA is for, from its keys (kohya, diffusers/peft, BFL/XLabs and ComfyUI layouts)

def lora_family(shapes: dict) -> str | None:
    """sd1, sd2, sdxl, sd3 or flux for a LoRA's tensor names and shapes; None when the keys do not tell."""
    names = list(shapes)

    def has(*parts):
        return any(any(p in k for p in parts) for k in names)
    if has("double_blocks", "single_blocks", "single_transformer_blocks"):
        return "flux"
    if has("joint_blocks", "context_block", "x_block"):
        return "sd3"
    if any(k.startswith(("lora_te1_", "lora_te2_", "te1.", "te2.", "text_encoder_2.")) for k in names) \
            or has("add_embedding", "label_emb"):
        return "sdxl"
    width = _width(shapes, ("transformer_blocks_0_attn_to_q", "transformer_blocks.0.attn.to_q"))
    if width:   # a DiT LoRA in diffusers or kohya names: its width tells the family
        return {1536: "sd3", 2432: "sd3", 3072: "flux"}.get(width)
    context = _width(shapes, ("attn2_to_k", "attn2.to_k"))
    return {768: "sd1", 1024: "sd2", 2048: "sdxl"}.get(context)


def _width(shapes: dict, parts: tuple[str, ...]) -> int:
    """The input width of the first down/A matrix whose name has one of `parts`."""
    for key, shape in shapes.items():
        if any(p in key for p in parts) and any(d in key for d in ("lora_down", "lora_A", "lora.down", "down.weight")) \
                and len(shape) == 2:
            return shape[1]
    return 0


def lora_file_info(path) -> tuple[str | None, bool]:
    """(the family a LoRA file or diffusers LoRA folder is for, or None when its keys do not tell; whether it is
    in kohya's layout), from its header."""
    from pathlib import Path
    path = Path(path)
    try:
        shapes = read_header(path / DIFFUSERS_LORA_FILE if path.is_dir() else path).shapes
    except (NotAModel, OSError):
        return None, False
    return lora_family(shapes), any(k.startswith(("lora_unet_", "lora_te")) for k in shapes)


def lora_file_family(path) -> str | None:
    return lora_file_info(path)[0]
