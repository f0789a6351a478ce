"""Sampler and schedule names (the original shell's, A1111's, InvokeAI's, ComfyUI's) and the diffusers
schedulers behind them.

stdlib only: the generator engine turns a `plan(sampler, schedule)` into a scheduler.
Sources: A1111 `modules/sd_samplers_kdiffusion.py`, `modules/sd_schedulers.py`; diffusers
`docs/source/en/api/schedulers/overview.md`. A name diffusers cannot run is kept (a recipe stays
what it was) and refused by name when it is about to run; it is never swapped for a look-alike.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, replace

from .errors import UserError


class SamplerError(UserError):
    """A sampler/schedule pair that cannot run here; str() is the one line for the user."""


@dataclass(frozen=True)
class Sampler:
    name: str                     # canonical name written to logs (the original shell's when it has one)
    a1111: str | None             # AUTOMATIC1111's name (without a schedule suffix)
    scheduler: str | None         # diffusers scheduler class; None: diffusers has none
    options: dict = field(default_factory=dict)
    auto: str | None = None       # A1111's "Automatic" schedule for it (karras, exponential; None: uniform)
    ancestral: bool = False
    needs: str | None = None      # an extra package the scheduler imports
    aliases: tuple[str, ...] = ()  # A1111's aliases, ComfyUI's and InvokeAI 3's names
    timesteps: bool = False       # A1111 runs it on timesteps: it ignores the schedule type
    instead: str = ""             # for scheduler None: what to use instead
    schedule: str | None = None   # set on a combined name such as "DPM++ 2M Karras"
    eta: float | None = None      # the step's eta when --eta is not given (TCD's gamma, DDIM's eta); None: takes none


SAMPLERS: tuple[Sampler, ...] = (
    Sampler("ddim", "DDIM", "DDIMScheduler", timesteps=True, eta=0.0),
    Sampler("plms", "PLMS", "PNDMScheduler", {"skip_prk_steps": True}, timesteps=True, aliases=("pndm",)),
    Sampler("k_lms", "LMS", "LMSDiscreteScheduler", aliases=("lms",)),
    Sampler("k_euler", "Euler", "EulerDiscreteScheduler", aliases=("euler",)),
    Sampler("k_euler_a", "Euler a", "EulerAncestralDiscreteScheduler", ancestral=True,
            aliases=("k_euler_ancestral", "euler_ancestral", "euler_a")),
    Sampler("k_heun", "Heun", "HeunDiscreteScheduler", aliases=("heun",)),
    Sampler("k_dpm_2", "DPM2", "KDPM2DiscreteScheduler", auto="karras", aliases=("dpm_2", "kdpm_2")),
    Sampler("k_dpm_2_a", "DPM2 a", "KDPM2AncestralDiscreteScheduler", auto="karras", ancestral=True,
            aliases=("dpm_2_ancestral", "kdpm_2_a")),
    Sampler("k_dpmpp_2", "DPM++ 2M", "DPMSolverMultistepScheduler", auto="karras", aliases=("k_dpmpp_2m", "dpmpp_2m")),
    Sampler("k_dpmpp_2_a", "DPM++ 2S a", None, auto="karras", ancestral=True,
            aliases=("k_dpmpp_2s_a", "dpmpp_2s_ancestral"),
            instead="try k_euler_a or k_dpm_2_a (ancestral), or dpmpp_2s (diffusers' DPMSolverSinglestepScheduler, "
                    "not ancestral, which dreamshell ran for this name before)"),
    Sampler("dpmpp_2s", None, "DPMSolverSinglestepScheduler"),
    Sampler("DPM++ SDE", "DPM++ SDE", "DPMSolverSDEScheduler", auto="karras", needs="torchsde",
            aliases=("k_dpmpp_sde", "dpmpp_sde", "dpmpp_sde_gpu")),
    Sampler("DPM++ 2M SDE", "DPM++ 2M SDE", "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"},
            auto="exponential", aliases=("k_dpmpp_2m_sde", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu")),
    Sampler("DPM++ 2M SDE Heun", "DPM++ 2M SDE Heun", "DPMSolverMultistepScheduler",
            {"algorithm_type": "sde-dpmsolver++", "solver_type": "heun"}, auto="exponential",
            aliases=("k_dpmpp_2m_sde_heun",)),
    Sampler("DPM++ 3M SDE", "DPM++ 3M SDE", "DPMSolverMultistepScheduler",
            {"algorithm_type": "sde-dpmsolver++", "solver_order": 3}, auto="exponential",
            aliases=("k_dpmpp_3m_sde", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu")),
    Sampler("DPM fast", "DPM fast", None, aliases=("k_dpm_fast", "dpm_fast"), instead="try k_dpmpp_2 or UniPC"),
    Sampler("DPM adaptive", "DPM adaptive", None, aliases=("k_dpm_ad", "dpm_adaptive"),
            instead="try k_dpmpp_2 or UniPC"),
    Sampler("Restart", "Restart", None, auto="karras", aliases=("restart",), instead="try k_heun or k_dpmpp_2"),
    Sampler("DDIM CFG++", "DDIM CFG++", None, timesteps=True, aliases=("ddim_cfgpp",), instead="try ddim"),
    Sampler("UniPC", "UniPC", "UniPCMultistepScheduler", timesteps=True, aliases=("unipc", "uni_pc")),
    # A1111 runs LCM as a k-diffusion sampler over its 50 LCM sigmas (sd_samplers_lcm.py), so its Schedule type
    # applies; diffusers' LCMScheduler ignores timestep_spacing (999, 759, 499, 259 at 4 steps, any spacing)
    Sampler("LCM", "LCM", "LCMScheduler", aliases=("k_lcm", "lcm")),
    Sampler("deis", None, "DEISMultistepScheduler"),
    # TCD (Zheng et al. 2024, arXiv 2402.19159): diffusers' TCDScheduler; its gamma is the step's `eta`, 0.3 by
    # default (diffusers docs using-diffusers/inference_with_tcd_lora.md; ComfyUI-TCD's and the A1111 TCD
    # extension's default). ComfyUI core has no `tcd` sampler_name; custom nodes and forks register it.
    Sampler("TCD", "TCD", "TCDScheduler", eta=0.3, aliases=("tcd",)),
)


@dataclass(frozen=True)
class Schedule:
    name: str                 # canonical name (A1111's internal one)
    a1111: str                # A1111's label, written as `Schedule type:`
    options: dict | None      # for the timesteps samplers (DDIM, PLMS, UniPC, LCM): diffusers scheduler options;
                              # None: diffusers cannot make it
    aliases: tuple[str, ...] = ()
    sigmas: bool = False      # for the k-diffusion samplers: A1111's sigmas are made (engines/schedules.py)


SCHEDULES: tuple[Schedule, ...] = (
    Schedule("automatic", "Automatic", {}),    # A1111: the sampler's own default (Sampler.auto)
    Schedule("uniform", "Uniform", {"timestep_spacing": "linspace"}, sigmas=True),
    Schedule("karras", "Karras", {"use_karras_sigmas": True}, sigmas=True),
    Schedule("exponential", "Exponential", {"use_exponential_sigmas": True}, sigmas=True),
    Schedule("polyexponential", "Polyexponential", None, sigmas=True),
    Schedule("sgm_uniform", "SGM Uniform", {"timestep_spacing": "trailing"}, ("SGMUniform",), sigmas=True),
    Schedule("kl_optimal", "KL Optimal", None),
    Schedule("align_your_steps", "Align Your Steps", None),
    Schedule("simple", "Simple", {"timestep_spacing": "trailing"}, sigmas=True),
    Schedule("normal", "Normal", {"timestep_spacing": "linspace"}, sigmas=True),
    Schedule("ddim", "DDIM", {"timestep_spacing": "leading", "steps_offset": 1}, ("ddim_uniform",), sigmas=True),
    Schedule("beta", "Beta", {"use_beta_sigmas": True}, sigmas=True),
    # Forge's `Turbo` (modules/sd_schedulers.py turbo_scheduler): timesteps round(k * 1000/n - 1), k = n..1, at
    # their exact sigmas: diffusers' trailing integers at 1-15 steps (999, 749, 499, 249 at 4), within one above
    Schedule("turbo", "Turbo", {"timestep_spacing": "trailing"}),
)
# A1111 drops the next-to-last sigma for these (sd_samplers_kdiffusion.py `discard_next_to_last_sigma`)
DISCARD_PENULTIMATE = frozenset({"k_dpm_2", "k_dpm_2_a", "DPM++ 3M SDE"})

# the schedule options each diffusers scheduler's __init__ takes (diffusers 0.42; from_config ignores others)
_SPACING = frozenset({"timestep_spacing", "steps_offset"})
_ALL = _SPACING | {"use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas"}
_TAKES: dict[str, frozenset] = {
    "DDIMScheduler": _SPACING, "PNDMScheduler": _SPACING, "EulerAncestralDiscreteScheduler": _SPACING,
    "LCMScheduler": _SPACING, "TCDScheduler": _SPACING, "DPMSolverSinglestepScheduler": _ALL - _SPACING,
    **{name: _ALL for name in ("LMSDiscreteScheduler", "EulerDiscreteScheduler", "HeunDiscreteScheduler",
                               "KDPM2DiscreteScheduler", "KDPM2AncestralDiscreteScheduler",
                               "DPMSolverMultistepScheduler", "DPMSolverSDEScheduler", "UniPCMultistepScheduler",
                               "DEISMultistepScheduler")},
}

# diffusers schedulers that step on timesteps with no sigmas to install (A1111's LCM runs its schedule's sigmas as a
# k-diffusion sampler; here LCMScheduler and TCDScheduler take the schedule's spacing, as before issue 19)
_NO_SIGMAS = frozenset({"DDIMScheduler", "PNDMScheduler", "LCMScheduler", "TCDScheduler"})

# the schedulers whose set_timesteps() takes explicit `timesteps` (diffusers 0.42; tests/test_presets.py checks)
TAKES_TIMESTEPS = frozenset({"EulerDiscreteScheduler", "HeunDiscreteScheduler", "DPMSolverMultistepScheduler",
                             "DPMSolverSinglestepScheduler", "LCMScheduler", "TCDScheduler"})

_SCHEDULE_BY_NAME: dict[str, Schedule] = {}
for _sc in SCHEDULES:
    for _n in (_sc.name, _sc.a1111, *_sc.aliases):
        _SCHEDULE_BY_NAME[_n.lower()] = _sc

_BY_NAME: dict[str, Sampler] = {}
for _s in SAMPLERS:
    for _n in (_s.name, _s.a1111, *_s.aliases):
        if _n:
            _BY_NAME.setdefault(_n.lower(), _s)


def find_schedule(name: str) -> Schedule | None:
    """The schedule called `name` (A1111's label or internal name, ComfyUI's, any case), or None."""
    return _SCHEDULE_BY_NAME.get(name.strip().lower())


def find_sampler(name: str) -> Sampler | None:
    """The sampler called `name` (the original shell's, A1111's, ComfyUI or InvokeAI spelling, any case), or None.

    A1111's combined names ("DPM++ 2M Karras", "Euler a SGM Uniform") give the sampler with its
    `schedule` set, named "<A1111 sampler> <A1111 schedule>"."""
    key = name.strip().lower()
    if key in _BY_NAME:
        return _BY_NAME[key]
    for sc in SCHEDULES[1:]:
        for suffix in (sc.a1111, sc.name, *sc.aliases):
            if key.endswith(" " + suffix.lower()):
                base = _BY_NAME.get(key[: -len(suffix) - 1].strip())
                if base is not None:
                    return replace(base, name=f"{base.a1111 or base.name} {sc.a1111}", schedule=sc.name)
    return None


def schedule_names() -> list[str]:
    """Accepted schedule names (for help and completion)."""
    return [s.name for s in SCHEDULES]


def sampler_names() -> list[str]:
    """The names of the samplers that run here, canonical ones first (for help, completion and the
    unknown-sampler error). Names diffusers has no scheduler for (`k_dpmpp_2_a`, `DPM fast`, ...) are
    still read from recipes and refused by name when run, but never offered."""
    runs = [s for s in SAMPLERS if s.scheduler is not None]
    names = [s.name for s in runs]
    names += [s.a1111 for s in runs if s.a1111 and s.a1111 not in names]
    names += ["DPM++ 2M Karras", "DPM++ SDE Karras", "DPM2 Karras", "DPM2 a Karras", "LMS Karras"]
    return names


def nearest_sampler(name: str) -> str | None:
    """The accepted name closest to a misspelt one, if any is close."""
    lowered = {n.lower(): n for n in sampler_names()}
    hit = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.5)
    return lowered[hit[0]] if hit else None


def effective_schedule(sampler: Sampler, schedule: str | None) -> Schedule | None:
    """The schedule that runs: the line's, else the combined name's; `automatic` is A1111's meaning
    (the sampler's own: Karras for DPM2, DPM2 a, DPM++ 2M, DPM++ 2S a, DPM++ SDE, Restart; Exponential
    for the 2M/3M SDE ones; Uniform for the rest). None: the model's own scheduler config."""
    name = schedule or sampler.schedule
    if name is None:
        return None
    found = find_schedule(name)
    if found is not None and found.name == "automatic":
        return find_schedule(sampler.auto or "uniform")
    return found


# A1111 1.10's UniPC settings (modules/shared_options.py: uni_pc_variant bh1, uni_pc_order 3,
# uni_pc_lower_order_final); diffusers' defaults are bh2 and order 2
A1111_UNIPC = {"solver_type": "bh1", "solver_order": 3, "lower_order_final": True}


@dataclass(frozen=True)
class Plan:
    """What the generator builds: `getattr(diffusers, scheduler).from_config(config, **options)`, then A1111's
    schedule on it (engines/schedules.install): its `sigmas` (a schedule name), `discard_penultimate`, for
    the DDIM sampler on the ddim schedule A1111's DDIM timesteps, for UniPC on no schedule (or automatic)
    A1111's UniPC grid; it runs with `pipe(timesteps=list(timesteps))` when `timesteps` is not empty (else
    `num_inference_steps`) and `pipe(eta=eta)` when `eta` is not None."""

    scheduler: str
    options: dict
    needs: str | None
    timesteps: tuple[int, ...] = ()
    eta: float | None = None
    sigmas: str | None = None
    discard_penultimate: bool = False
    a1111_ddim: bool = False
    a1111_unipc: bool = False

    def pipeline_args(self) -> dict:
        """What the pipeline call takes beside the scheduler: `timesteps` (a list) when explicit, `eta` when the
        sampler has one (TCD's gamma arrives as eta: without it the pipeline's default eta=0.0 replaces TCD's 0.3)."""
        args: dict = {}
        if self.timesteps:
            args["timesteps"] = list(self.timesteps)
        if self.eta is not None:
            args["eta"] = self.eta
        return args


def plan(sampler_name: str, schedule: str | None = None, timesteps: tuple[int, ...] = (),
         eta: float | None = None) -> Plan:
    """The diffusers scheduler for a sampler and schedule (and explicit timesteps, and the step's eta), or
    SamplerError naming what cannot run."""
    sampler = find_sampler(sampler_name)
    if sampler is None:
        raise SamplerError(f"unknown sampler '{sampler_name}'")
    label = sampler.a1111 and sampler.a1111 != sampler.name and f" (A1111 '{sampler.a1111}')" or ""
    if sampler.scheduler is None:
        kind = ", ancestral," if sampler.ancestral else ""
        raise SamplerError(f"sampler '{sampler.name}'{label}{kind} has no diffusers scheduler, so dreamshell "
                           f"cannot run it; {sampler.instead}")
    options = dict(sampler.options)
    if eta is not None and sampler.eta is None:
        takes = sorted(s.name for s in SAMPLERS if s.eta is not None)
        raise SamplerError(f"sampler '{sampler.name}' takes no --eta; samplers that do: {', '.join(takes)}")
    eta = eta if eta is not None else sampler.eta
    if timesteps:   # explicit timesteps: no schedule is made (they are the schedule)
        if sampler.scheduler not in TAKES_TIMESTEPS:
            takes = sorted(s.name for s in SAMPLERS if s.scheduler in TAKES_TIMESTEPS)
            raise SamplerError(f"sampler '{sampler.name}' cannot run explicit --timesteps (diffusers' "
                               f"{sampler.scheduler} takes none); samplers that can: {', '.join(takes)}")
        return Plan(sampler.scheduler, options, sampler.needs, tuple(timesteps), eta)
    if sampler.name == "UniPC" and (schedule is None or getattr(find_schedule(schedule), "name", "") == "automatic"):
        # A1111's own UniPC (sd_samplers_timesteps_impl.unipc): its time-uniform grid and its default options
        return Plan(sampler.scheduler, {**options, **A1111_UNIPC}, sampler.needs, eta=eta, a1111_unipc=True)
    sched = effective_schedule(sampler, schedule)
    if sched is None:
        return Plan(sampler.scheduler, options, sampler.needs, eta=eta)
    takes = _TAKES.get(sampler.scheduler, frozenset())
    if not sampler.timesteps and sched.sigmas and sampler.scheduler not in _NO_SIGMAS:
        # A1111's sigmas, made here: handed over through use_karras_sigmas' hook where the scheduler has it, from a
        # first noise of x * sigmas[0] ("linspace" spacing: diffusers' init_noise_sigma is then the largest sigma)
        options.update({k: v for k, v in (("use_karras_sigmas", True), ("timestep_spacing", "linspace"))
                        if k in takes})
        return Plan(sampler.scheduler, options, sampler.needs, eta=eta, sigmas=sched.name,
                    discard_penultimate=sampler.name in DISCARD_PENULTIMATE)
    if sampler.name == "ddim" and sched.name == "ddim":   # A1111's DDIM sampler walks the DDIM schedule's timesteps
        return Plan(sampler.scheduler, {**options, **sched.options}, sampler.needs, eta=eta, a1111_ddim=True)
    if sched.options is None:
        runs = [s.name for s in SCHEDULES if (s.sigmas if not sampler.timesteps else s.options is not None)]
        raise SamplerError(f"the '{sched.a1111}' schedule has no diffusers equivalent for {sampler.name}; schedules "
                           "that run: " + ", ".join(runs))
    missing = [k for k in sched.options if k not in takes]
    if missing:
        raise SamplerError(f"sampler '{sampler.name}' cannot run with the '{sched.a1111}' schedule: diffusers' "
                           f"{sampler.scheduler} has no {missing[0]}")
    options.update(sched.options)
    return Plan(sampler.scheduler, options, sampler.needs, eta=eta)


def cannot_run(sampler_name: str | None, schedule: str | None = None, timesteps: tuple[int, ...] = (),
               eta: float | None = None) -> str | None:
    """Why this sampler/schedule (with explicit timesteps, an eta) cannot run here, or None when it can
    (checked without torch)."""
    if not sampler_name:
        return None
    try:
        plan(sampler_name, schedule, timesteps, eta)
    except SamplerError as e:
        return str(e)
    return None
