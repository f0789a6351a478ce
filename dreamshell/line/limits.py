"""The bounds on what one line may ask for, in one place (stdlib only): every number here is used by
the switch table (switches.py), the parser, the planner and the recipe readers (store/formats).

The parser checks what the line alone shows (`check_request` on the parsed request); the planner checks
again once the model's defaults are filled in (`check_resolved`: the sampler, the steps). Each refusal
is one LimitError line naming the bound and what to do instead.
"""

from __future__ import annotations

from .errors import LimitError
from .request import DreamRequest
from .safetext import quoted, shorten
from .samplers import SAMPLERS, find_sampler

MAX_SEED = 2**32 - 1           # -S: a 32-bit seed, as every tool writes it
MIN_SIZE, MAX_SIZE = 64, 8192  # -W/-H, multiples of 8
MAX_ITERATIONS = 1000          # -n: images from one line
MAX_LINE_CHARS = 10_000        # one typed line or one line of a command file
MAX_PROMPT_CHARS = 2000        # the prompt; compel encodes long prompts in 75-token chunks
MAX_PAREN_DEPTH = 3            # ((( ))) nesting: compel's parser is exponential in the depth
MAX_PAREN_GROUPS = 40          # ( ) groups in one prompt: each costs compel's parser time
MAX_HIRES_SIZE = MAX_SIZE      # the hires fix's second pass, like -W/-H
MAX_UPSCALED_SIDE = 16384      # -U and !fix: each side of the upscaled image (a 16384x16384 RGB image is 805 MB)
MAX_LORAS = 16                 # <lora:...> tags in one prompt
MAX_COMMAND_FILE_BYTES = 64 * 1024 * 1024   # --from_file, !replay, the dry run

# Steps each sampler takes: the SD schedulers are trained on 1000 timesteps. DDIM raises above it,
# PLMS then repeats one timestep, and the DPM-Solver/UniPC/DEIS grids repeat a timestep from 1000 on;
# LCM and TCD refuse more than their 50 original steps (measured on diffusers' schedulers with the SD 1.x config;
# tests/test_limits.py checks it).
TRAIN_TIMESTEPS = 1000
_SCHEDULER_STEPS = {"DPMSolverMultistepScheduler": TRAIN_TIMESTEPS - 1,
                    "DPMSolverSinglestepScheduler": TRAIN_TIMESTEPS - 1,
                    "DPMSolverSDEScheduler": TRAIN_TIMESTEPS - 1, "UniPCMultistepScheduler": TRAIN_TIMESTEPS - 1,
                    "DEISMultistepScheduler": TRAIN_TIMESTEPS - 1, "LCMScheduler": 50, "TCDScheduler": 50}
MAX_STEPS: dict[str, int] = {s.name: _SCHEDULER_STEPS.get(s.scheduler or "", TRAIN_TIMESTEPS) for s in SAMPLERS}
MAX_ANY_STEPS = max(MAX_STEPS.values())


def _number(n: int) -> str:
    """A user's number as messages show it: a few hundred digits are shortened."""
    return shorten(str(n), 24)


def check_iterations(n: int) -> None:
    if n > MAX_ITERATIONS:
        raise LimitError(f"-n {_number(n)} is too many images for one line; the most is {MAX_ITERATIONS} "
                         "(run the line again for more)")


def max_steps(sampler: str | None) -> int:
    """The most steps `sampler` (any spelling, with its schedule) can take; any sampler's when unknown."""
    found = find_sampler(sampler) if sampler else None
    if found is None:
        return MAX_ANY_STEPS
    return _SCHEDULER_STEPS.get(found.scheduler or "", TRAIN_TIMESTEPS)


def check_steps(steps: int, sampler: str | None) -> None:
    """Steps within what the sampler can take (any sampler's bound when it is not known yet)."""
    bound = max_steps(sampler)
    if steps > bound:
        which = f"the {sampler} sampler" if sampler else "any sampler"
        why = (f"the model was trained on {TRAIN_TIMESTEPS} noise levels" if bound >= TRAIN_TIMESTEPS - 1
               else "the scheduler's own bound")
        raise LimitError(f"-s {_number(steps)} is more steps than {which} can take: at most {bound} ({why})")


def check_prompt_length(prompt: str) -> None:
    if len(prompt) > MAX_PROMPT_CHARS:
        raise LimitError(f"the prompt is {len(prompt)} characters long ({quoted(prompt, 40)}); "
                         f"the most is {MAX_PROMPT_CHARS}")


def check_line_length(line: str) -> None:
    if len(line) > MAX_LINE_CHARS:
        raise LimitError(f"the line is {len(line)} characters long ({quoted(line, 40)}); "
                         f"a command is at most {MAX_LINE_CHARS}")


def check_request(request: DreamRequest) -> None:
    """Raise LimitError for a request over a bound; None fields (not known yet) are not checked."""
    check_prompt_length(request.prompt)
    check_iterations(request.iterations)
    check_resolved(request)


def check_resolved(request: DreamRequest) -> None:
    """The bounds that depend on values a model's defaults may fill in (the sampler, the steps, the size):
    checked again once a line is resolved."""
    if request.steps is not None:
        check_steps(request.steps, request.sampler)
    if request.hires_steps is not None:
        check_steps(request.hires_steps, request.sampler)
    if request.hires_fix and request.width and request.height:
        from .hires import DEFAULT_SCALE, target_size
        scale = request.hires_scale or DEFAULT_SCALE
        w, h = target_size(request.width, request.height, scale)
        if max(w, h) > MAX_HIRES_SIZE:
            raise LimitError(f"--hires_fix makes {w}x{h} from {request.width}x{request.height} at scale {scale:g}; "
                             f"sides are at most {MAX_HIRES_SIZE}: lower --hires_scale or -W/-H")
    if request.upscale and request.width and request.height:
        width, height = request.width, request.height
        if request.hires_fix:
            from .hires import DEFAULT_SCALE, target_size
            width, height = target_size(width, height, request.hires_scale or DEFAULT_SCALE)
        check_upscaled(width, height, request.upscale.factor, "-U")


def check_denoised_steps(request: DreamRequest) -> None:
    """A line from an image (-I, -f) runs int(steps x strength) of its steps in diffusers' img2img and inpaint
    pipelines, which fail when that is 0: one line instead (issue 17: few-step presets make it easy; A1111 runs
    one step there). Checked once the line is resolved (the hires fix's second pass counts its steps A1111's
    way and is not checked)."""
    steps, strength = len(request.timesteps) or request.steps, request.strength
    if request.init_img and steps and strength and int(steps * strength) < 1:
        import math
        raise LimitError(f"-f {strength:g} with -s {steps} runs no step (a pass from an image runs int(steps x "
                         f"strength) = 0 of its {steps}): use -f {math.ceil(100 / steps) / 100:g} or more, or -s "
                         f"{math.ceil(1 / strength)} or more")


def check_upscaled(width: int, height: int, factor: float, what: str) -> None:
    """An upscaled image's sides are at most MAX_UPSCALED_SIDE."""
    w, h = round(width * factor), round(height * factor)
    if max(w, h) > MAX_UPSCALED_SIDE:
        raise LimitError(f"{what} {factor:g} makes {w}x{h} from {width}x{height}; upscaled sides are at most "
                         f"{MAX_UPSCALED_SIDE}: use a smaller factor")


def check_clip_skip(n: int | None, layers: int | None) -> None:
    """Clip skip N leaves out the text encoder's last N-1 layers: at most all but one (None: not known)."""
    if n and layers and n - 1 >= layers:
        raise LimitError(f"--clip_skip {n}: this model's text encoder has {layers} layers; use 1 to {layers}")
