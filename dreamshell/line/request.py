"""The typed requests a dream> line becomes (stdlib only)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from .control import ControlSpec


@dataclass(frozen=True)
class UpscaleSpec:
    """`-U factor [strength]`: Real-ESRGAN upscale; strength < 1 blends with a plain resize."""

    factor: float
    strength: float = 0.75


@dataclass(frozen=True)
class DreamRequest:
    """One dream> command. None means "the model's default" (or a random seed)."""

    prompt: str
    steps: int | None = None
    seed: int | None = None
    iterations: int = 1
    width: int | None = None
    height: int | None = None
    cfg_scale: float | None = None
    sampler: str | None = None
    schedule: str | None = None     # noise schedule (A1111's Schedule type); None: the model's own
    init_img: str | None = None
    strength: float | None = None
    init_mask: str | None = None
    fit: bool = False
    upscale: UpscaleSpec | None = None
    save_original: bool = False
    grid: bool = False
    variation_amount: float = 0.0
    with_variations: tuple[tuple[int, float], ...] = ()
    skip_normalize: bool = False
    log_tokenization: bool = False
    outdir: str | None = None
    seamless: bool = False
    model: str | None = None
    clip_skip: int | None = None    # A1111's numbering: 1 = the last layer (off); None: the model's own
    vae: str | None = None          # a VAE file or folder (name in the VAE folder, or a path); None: the model's
    hires_fix: bool = False         # first pass at W x H, upscaled, then an img2img pass at the target size
    hires_scale: float | None = None      # target = W x H times this (default 2)
    hires_steps: int | None = None        # steps of the second pass (default: -s)
    hires_strength: float | None = None   # denoising strength of the second pass (default 0.7, A1111's)
    hires_upscaler: str | None = None     # latent | lanczos | esrgan (default latent)
    timesteps: tuple[int, ...] = ()       # explicit timesteps, strictly decreasing (--timesteps 999,749,499,249)
    eta: float | None = None              # the step's eta: TCD's gamma, DDIM's eta; None: the sampler's own
    preset: str | None = None             # a few-step recipe (line/presets.py); resolved before a line runs
    control: tuple[ControlSpec, ...] = ()          # --control: ControlNets / T2I-Adapters and their images
    outcrop: tuple[tuple[str, int], ...] = ()      # --outcrop: (direction, pixels) the init image grows by
    inpaint_area: str | None = None       # "masked": A1111's Only masked (None: the whole picture)
    inpaint_padding: int | None = None    # Only masked padding, pixels (default 32)
    guidance: float | None = None   # FLUX.1 dev's distilled guidance (Forge's Distilled CFG Scale); None: 3.5
    cfg_rescale: float | None = None  # CFG rescale phi (Lin et al. 2023; diffusers' guidance_rescale); None: off
    rng: str | None = None          # noise source: cpu | gpu | nv (line/rng.py); None: the model's own (cpu)
    ensd: int = 0                   # eta noise seed delta: later draws (step noise) from seed + ensd
    decoder: str | None = None            # taesd | vae | a TAESD name or path (engines/decoders.py); None: the model's

    def with_(self, **changes) -> "DreamRequest":
        return replace(self, **changes)


REQUEST_DEFAULTS = {f.name: f.default for f in fields(DreamRequest) if f.name != "prompt"}


@dataclass(frozen=True)
class HelpRequest:
    """`-h` / `--help` on a line, or `!help`."""


@dataclass(frozen=True)
class BangCommand:
    """A `!name args` line (args is the rest of the line, unparsed)."""

    name: str
    args: str = ""


@dataclass(frozen=True)
class Blank:
    """An empty line or a `# comment`."""


@dataclass(frozen=True)
class ImageRecord:
    """One saved image: where it went and the canonical command that remakes it."""

    path: str
    seed: int
    command: str
