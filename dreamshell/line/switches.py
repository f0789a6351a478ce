"""The one table of dream> switches: it drives the parser, the canonical formatter, !help and completion.

Adding a switch is adding a row (and a field to DreamRequest). stdlib only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from . import control as ctl
from . import hires, rng
from .errors import UserError
from .limits import MAX_SEED, MAX_SIZE, MIN_SIZE
from .request import UpscaleSpec
from .safetext import quoted
from .samplers import (
    find_sampler,
    find_schedule,
    nearest_sampler,
    sampler_names,
    schedule_names,
)


class SwitchError(UserError):
    """A value a switch cannot take; the message names the token and the rule."""


def _int(token: str, what: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise SwitchError(f"{quoted(token)} is not a whole number; {what}") from None


def _float(token: str, what: str) -> float:
    try:
        value = float(token)
    except ValueError:
        raise SwitchError(f"{quoted(token)} is not a number; {what}") from None
    if not math.isfinite(value):
        raise SwitchError(f"{quoted(token)} is not a finite number; {what}")
    return value


def positive_int(rule: str) -> Callable[[str], int]:
    def convert(token: str) -> int:
        value = _int(token, rule)
        if value < 1:
            raise SwitchError(f"{quoted(token)} is too small; {rule}")
        return value
    return convert


def seed(token: str) -> int:
    rule = f"the seed is a whole number from 0 to {MAX_SEED}, or -1, -2, ... for an earlier image's seed"
    value = _int(token, rule)
    if value > MAX_SEED:
        raise SwitchError(f"{quoted(token)} is too large; {rule}")
    return value




def image_size(token: str) -> int:
    rule = f"width and height are multiples of 8 from {MIN_SIZE} to {MAX_SIZE}"
    value = _int(token, rule)
    if value % 8 or not MIN_SIZE <= value <= MAX_SIZE:
        raise SwitchError(f"{quoted(token)} is not allowed; {rule}")
    return value


def float_range(lo: float, hi: float, rule: str, lo_open: bool = False) -> Callable[[str], float]:
    def convert(token: str) -> float:
        value = _float(token, rule)
        if value > hi or value < lo or (lo_open and value == lo):
            raise SwitchError(f"{quoted(token)} is out of range; {rule}")
        return value
    return convert


def sampler(token: str) -> str:
    found = find_sampler(token)
    if found is None:
        near = nearest_sampler(token[:40])
        hint = f"did you mean '{near}'? " if near else ""
        raise SwitchError(f"unknown sampler {quoted(token)}; {hint}samplers: {', '.join(sampler_names()[:10])}, ...")
    return found.name


def schedule(token: str) -> str:
    found = find_schedule(token)
    if found is None:
        raise SwitchError(f"unknown schedule '{token}'; schedules: {', '.join(schedule_names())}")
    return found.name


def text(rule: str) -> Callable[[str], str]:
    def convert(token: str) -> str:
        if not token.strip():
            raise SwitchError(f"an empty value; {rule}")
        return token
    return convert


MAX_TIMESTEP = 999        # the SD schedulers' last training timestep (num_train_timesteps - 1)
MAX_TIMESTEPS = 1000


def timesteps(token: str) -> tuple[int, ...]:
    rule = (f"--timesteps takes whole numbers from {MAX_TIMESTEP} down to 0, strictly decreasing, separated by "
            f"commas (at most {MAX_TIMESTEPS}), e.g. 999,749,499,249")
    parts = token.split(",")
    if len(parts) > MAX_TIMESTEPS:
        raise SwitchError(f"{len(parts)} timesteps is too many; {rule}")
    values = []
    for part in parts:
        value = _int(part.strip(), rule)
        if not 0 <= value <= MAX_TIMESTEP:
            raise SwitchError(f"{quoted(part.strip())} is out of range; {rule}")
        if values and value >= values[-1]:
            raise SwitchError(f"{value} after {values[-1]} does not decrease; {rule}")
        values.append(value)
    return tuple(values)


def format_timesteps(values) -> list[str]:
    return [",".join(str(v) for v in values)]


DECODER_WORDS = ("taesd", "vae")   # --decoder taesd: the tiny decoder for the model; vae: the model's full VAE


def decoder(token: str) -> str:
    if not token.strip():
        raise SwitchError("an empty value; --decoder takes taesd, vae, a file name from the decoders folder, or a path")
    return token.lower() if token.lower() in DECODER_WORDS else token


def preset(token: str) -> str:
    from .presets import find_preset, preset_names
    found = find_preset(token)
    if found is None:
        raise SwitchError(f"unknown preset {quoted(token)}; presets: {', '.join(preset_names())} "
                          "(pick the step count with -s)")
    return found


def clip_skip(token: str) -> int:
    rule = "--clip_skip goes from 1 (the text encoder's last layer: off) to 12 (A1111's numbering)"
    value = _int(token, rule)
    if not 1 <= value <= 12:
        raise SwitchError(f"{quoted(token)} is out of range; {rule}")
    return value


def hires_upscaler(token: str) -> str:
    found = hires.find_upscaler(token)
    if found is None:
        raise SwitchError(f"unknown hires upscaler {quoted(token)}; use one of {', '.join(hires.upscaler_names())}")
    return found


def rng_source(token: str) -> str:
    found = rng.find_rng(token)
    if found is None:
        raise SwitchError(f"unknown noise source {quoted(token)}; use one of {', '.join(rng.rng_names())} "
                          "(A1111's RNG: CPU, GPU, NV)")
    return found


def ensd(token: str) -> int:
    rule = f"the eta noise seed delta is a whole number from 0 to {rng.MAX_ENSD} (A1111's ENSD; 0 = off)"
    value = _int(token, rule)
    if not 0 <= value <= rng.MAX_ENSD:
        raise SwitchError(f"{quoted(token)} is out of range; {rule}")
    return value


def variations(token: str) -> tuple[tuple[int, float], ...]:
    rule = "write seed:weight pairs separated by commas, e.g. 42:0.1,77:0.2"
    pairs = []
    for part in token.split(","):
        if ":" not in part:
            raise SwitchError(f"{quoted(part)} is not seed:weight; {rule}")
        s, w = part.split(":", 1)
        pairs.append((seed(s.strip()), float_range(0, 1, "weights go from 0 to 1")(w.strip())))
    return tuple(pairs)


def upscale(tokens: list[str]) -> UpscaleSpec:
    factor = _float(tokens[0], "-U takes a factor >= 1 (2 and 4 use a matching model), then an "
                               "optional strength from 0 to 1")
    if factor < 1 or factor > 16:
        raise SwitchError(f"{quoted(tokens[0])} is not allowed; the upscale factor goes from 1 to 16")
    strength = 0.75
    if len(tokens) > 1:
        strength = float_range(0, 1, "the upscale strength goes from 0 (plain resize) to 1 "
                                     "(Real-ESRGAN only)")(tokens[1])
    return UpscaleSpec(factor, strength)


def format_number(value: float) -> str:
    """Shortest text that reads back as the same float (7.0 -> '7', 0.75 -> '0.75')."""
    if isinstance(value, int):
        return str(value)
    s = repr(float(value))
    return s[:-2] if s.endswith(".0") else s


def format_upscale(spec: UpscaleSpec) -> list[str]:
    out = [format_number(spec.factor)]
    if spec.strength != 0.75:
        out.append(format_number(spec.strength))
    return out


def format_variations(pairs) -> list[str]:
    return [",".join(f"{s}:{format_number(w)}" for s, w in pairs)]


@dataclass(frozen=True)
class Switch:
    field: str                      # DreamRequest field it sets
    long: str                       # --long name (the canonical spelling)
    short: tuple[str, ...]          # -x spellings, the first one canonical
    convert: Callable[[str], Any] | None  # token -> value; None for a flag
    help: str
    metavar: str = ""
    nargs: tuple[int, int] = (1, 1)  # tokens taken: (min, max); flags take (0, 0)
    complete: str | None = None      # 'sampler', 'path', 'model' for the completer
    format: Callable[[Any], list[str]] | None = None  # value -> tokens (default: str)
    repeat: bool = False             # may be given again: each adds one value to a tuple (--control)
    aliases: tuple[str, ...] = ()    # other spellings read the same, never written (-c, -D)
    more: Callable[[str], bool] | None = None  # which further tokens are values (default: numbers)

    @property
    def is_flag(self) -> bool:
        return self.convert is None and self.nargs == (0, 0)

    @property
    def spelling(self) -> str:
        """The spelling used in canonical lines."""
        return self.short[0] if self.short else self.long

    def format_value(self, value: Any) -> list[str]:
        if self.is_flag:
            return []
        if self.format:
            return self.format(value)
        return [format_number(value) if isinstance(value, float) else str(value)]


def _control_value(token: str):
    try:
        return ctl.parse_control(token)
    except ctl.ControlError as e:
        raise SwitchError(str(e)) from None


def _outcrop_value(tokens: list[str]):
    try:
        return ctl.parse_outcrop(tokens)
    except ctl.ControlError as e:
        raise SwitchError(str(e)) from None


def _outcrop_token(token: str) -> bool:
    return token.lower() in ctl.DIRECTIONS or token.isdigit()


def _inpaint_area(token: str):
    try:
        return ctl.parse_inpaint_area(token)
    except ctl.ControlError as e:
        raise SwitchError(str(e)) from None


def _padding(token: str) -> int:
    try:
        return ctl.parse_padding(token)
    except ctl.ControlError as e:
        raise SwitchError(str(e)) from None


def _flag(field: str, long: str, short: tuple[str, ...], help: str) -> Switch:
    return Switch(field, long, short, None, help, nargs=(0, 0))


# Order is the order of canonical lines: prompt, -s, -S, -W, -H, -C, -A, [--schedule], --model first (the original shell's log lines).
SWITCHES: tuple[Switch, ...] = (
    Switch("steps", "--steps", ("-s",), positive_int("steps are a whole number >= 1"),
           "sampling steps", "N"),
    Switch("seed", "--seed", ("-S",), seed, "seed (-1: the last image's seed, -2 the one before)", "SEED"),
    Switch("width", "--width", ("-W",), image_size, "image width, a multiple of 8", "W"),
    Switch("height", "--height", ("-H",), image_size, "image height, a multiple of 8", "H"),
    Switch("cfg_scale", "--cfg_scale", ("-C",), float_range(0, 100, "the guidance scale goes from 0 to 100"),
           "classifier-free guidance scale", "SCALE"),
    Switch("sampler", "--sampler", ("-A", "-m"), sampler, "sampler (k_lms, ddim, \"Euler a\", ...)", "NAME",
           complete="sampler"),
    Switch("schedule", "--schedule", (), schedule,
           "noise schedule (A1111's Schedule type): karras, exponential, sgm_uniform, automatic, ...", "NAME",
           complete="schedule"),
    Switch("model", "--model", (), text("--model takes a model name from !models or a path"),
           "model for this line (switches the resident model)", "NAME", complete="model"),
    Switch("iterations", "--iterations", ("-n",), positive_int("the count is a whole number >= 1"),
           "images to make; image i gets seed S+i", "N"),
    Switch("init_img", "--init_img", ("-I",), text("-I takes an image path, or -1 for the last image"),
           "img2img: start from this image (-1: the last image made)", "PATH", complete="path"),
    Switch("strength", "--strength", ("-f",),
           float_range(0, 1, "the img2img strength is above 0 and at most 1", lo_open=True),
           "img2img noising strength (default 0.75)", "F"),
    Switch("init_mask", "--init_mask", ("-M",), text("-M takes a mask image path"),
           "inpainting mask (white = repaint)", "PATH", complete="path"),
    _flag("fit", "--fit", (), "resize the init image to fit W x H"),
    Switch("upscale", "--upscale", ("-U",), upscale,
           "Real-ESRGAN upscale: factor [strength]; a strength below 1 blends with a plain resize (default 0.75)",
           "F [S]", nargs=(1, 2), format=format_upscale),
    _flag("save_original", "--save_original", (), "with -U, keep the un-upscaled image too"),
    _flag("grid", "--grid", ("-g",), "also save a grid of the -n images"),
    Switch("variation_amount", "--variation_amount", ("-v",),
           float_range(0, 1, "the variation amount goes from 0 to 1"),
           "variation: blend the seed's noise toward new noise", "A"),
    Switch("with_variations", "--with_variations", ("-V",), variations,
           "replay variations: seed:weight,seed:weight", "SEED:W,...", format=format_variations),
    _flag("skip_normalize", "--skip_normalize", ("-x",), "don't normalize sub-prompt weights"),
    _flag("log_tokenization", "--log_tokenization", ("-t",), "show the tokens and what is past the limit"),
    Switch("outdir", "--outdir", ("-o",), text("-o takes a folder"), "output folder for this line", "DIR",
           complete="path"),
    _flag("seamless", "--seamless", (), "tileable output"),
    Switch("clip_skip", "--clip_skip", (), clip_skip,
           "stop the text encoder N layers from its end (A1111's Clip skip; 1 = off, 2 for many anime models)",
           "N"),
    Switch("vae", "--vae", (), text("--vae takes a VAE file name from the VAE folder, or a path"),
           "use this VAE (a .safetensors file or a diffusers folder) instead of the model's own", "NAME",
           complete="vae"),
    _flag("hires_fix", "--hires_fix", (), "make W x H, upscale, then redraw at the larger size (A1111's Hires. fix)"),
    Switch("hires_scale", "--hires_scale", (),
           float_range(1, hires.MAX_SCALE, f"the hires scale goes from 1 to {hires.MAX_SCALE:g}", lo_open=True),
           f"hires fix: the final size is W x H times this (default {hires.DEFAULT_SCALE:g})", "F"),
    Switch("hires_steps", "--hires_steps", (), positive_int("hires steps are a whole number >= 1"),
           "hires fix: steps of the second pass (default: -s)", "N"),
    Switch("hires_strength", "--hires_strength", (),
           float_range(0, 1, "the hires strength is above 0 and at most 1", lo_open=True),
           f"hires fix: denoising strength of the second pass (default {hires.DEFAULT_STRENGTH:g})", "F"),
    Switch("hires_upscaler", "--hires_upscaler", (), hires_upscaler,
           "hires fix: " + ", ".join(hires.upscaler_names()) + f" (default {hires.DEFAULT_UPSCALER})", "NAME",
           complete="hires_upscaler"),
    Switch("timesteps", "--timesteps", (), timesteps,
           "explicit timesteps instead of a schedule, e.g. 999,749,499,249 (sets -s to their count)", "T,T,...",
           format=format_timesteps),
    Switch("eta", "--eta", (), float_range(0, 1, "--eta goes from 0 to 1"),
           "the step's eta: TCD's gamma (default 0.3; more is softer), DDIM's eta (default 0)", "F"),
    Switch("preset", "--preset", (), preset,
           "a few-step recipe: lcm, turbo, lightning, hyper, tcd, dmd2 (-s picks the published step count; "
           "a switch on the line wins; the log records the resolved switches)", "NAME", complete="preset"),
    Switch("control", "--control", (), _control_value,
           "a ControlNet/T2I-Adapter (controlnets folder) guided by IMAGE (-1: the last image) through PRE ("
           + ", ".join(ctl.PREPROCESSORS) + "; default: the model's name says); W weight 0..2 (1), S..E the part of "
           "the steps it acts in (0..1); repeat for more",
           "MODEL[/PRE]:IMAGE[:W:S:E]", complete="control", format=lambda spec: [ctl.format_control(spec)],
           repeat=True),
    Switch("outcrop", "--outcrop", (), _outcrop_value,
           "grow the -I image by PIXELS on each side named and paint the new band (InvokeAI's outcrop; -c, and "
           "its older -D, read the same); -W/-H are the image's size before it grows",
           "DIR PIXELS ...", nargs=(2, 8), format=ctl.format_outcrop, aliases=("-c", "-D", "--out_direction"),
           more=_outcrop_token),
    Switch("inpaint_area", "--inpaint_area", (), _inpaint_area,
           "with -M: whole (default) or masked: only the area around the mask is inpainted, at the model's size, "
           "and pasted back (A1111's Only masked)", "AREA", complete="inpaint_area"),
    Switch("inpaint_padding", "--inpaint_padding", (), _padding,
           f"--inpaint_area masked: pixels around the mask taken with it (default {ctl.DEFAULT_PADDING})", "PX"),
    Switch("guidance", "--guidance", (), float_range(0, 100, "the distilled guidance goes from 0 to 100"),
           "FLUX.1 dev's distilled guidance (Forge's Distilled CFG Scale; default 3.5); -C is true CFG", "G"),
    Switch("cfg_rescale", "--cfg_rescale", (),
           float_range(0, 1, "the CFG rescale goes from 0 (off) to 1"),
           "rescale CFG toward the prompt's own scale (A1111's CFG Rescale phi; 0.7 for v-prediction "
           "zero-SNR models)", "PHI"),
    Switch("rng", "--rng", (), rng_source,
           "noise source: cpu (default; the same on every device), gpu (torch.randn on CUDA, A1111's default), "
           "nv (CUDA's noise made on any device, A1111's NV)", "SOURCE"),
    Switch("ensd", "--ensd", (), ensd,
           "eta noise seed delta (A1111's ENSD): ancestral samplers' step noise comes from seed + N", "N"),
    Switch("decoder", "--decoder", (), decoder,
           "what makes pixels from latents: taesd (the tiny decoder for this model, fast, a little softer), vae "
           "(the model's full VAE, the default), a TAESD file or folder name from the decoders folder, or a path",
           "NAME", complete="decoder"),
)

HELP_SPELLINGS = ("-h", "--help")

# Switches of the original shell that dreamshell recognises but does not implement.
UNSUPPORTED: dict[str, str] = {
    "-G": "face restoration (GFPGAN)", "--gfpgan_strength": "face restoration (GFPGAN)",
    "-ft": "face restoration", "--facetool": "face restoration",
    "-cf": "CodeFormer face restoration", "--codeformer_fidelity": "CodeFormer face restoration",
    "-b": "batch size (each image is made on its own; -b1 is accepted)", "--batch_size": "batch size",
    "--embiggen": "embiggen", "--embiggen_tiles": "embiggen", "-embiggen": "embiggen",
    "--threshold": "thresholding", "--perlin": "perlin noise",
    "--save_intermediates": "saving intermediate steps", "-tm": "text masks", "--text_mask": "text masks",
    "--invert_mask": "inverted masks", "-r": "inpaint replace", "--inpaint_replace": "inpaint replace",
    "--force_outpaint": "outpainting", "--seam_size": "outpainting seams", "--seam_blur": "outpainting seams",
    "--seam_strength": "outpainting seams", "--seam_steps": "outpainting seams", "-F": "the fast sampler",
    "--karras_max": "karras_max", "--ddim_eta": "ddim_eta",
}

BY_SPELLING: dict[str, Switch] = {}
for _sw in SWITCHES:
    BY_SPELLING[_sw.long] = _sw
    for _s in _sw.short + _sw.aliases:
        BY_SPELLING[_s] = _sw


def all_spellings() -> list[str]:
    return list(BY_SPELLING) + list(HELP_SPELLINGS)
