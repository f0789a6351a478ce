"""Sampler names (the original shell's and A1111's) and the diffusers schedulers behind them.

stdlib only: the generator engine turns a `Sampler` into a scheduler. REFERENCE.md section 5.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sampler:
    name: str                 # canonical name written to logs (the anchor's when it has one)
    a1111: str | None         # AUTOMATIC1111's display name
    scheduler: str            # diffusers scheduler class
    options: dict = field(default_factory=dict)
    needs: str | None = None  # an extra package the scheduler imports


SAMPLERS: tuple[Sampler, ...] = (
    Sampler("ddim", "DDIM", "DDIMScheduler"),
    Sampler("plms", "PLMS", "PNDMScheduler", {"skip_prk_steps": True}),
    Sampler("k_lms", "LMS", "LMSDiscreteScheduler"),
    Sampler("k_euler", "Euler", "EulerDiscreteScheduler"),
    Sampler("k_euler_a", "Euler a", "EulerAncestralDiscreteScheduler"),
    Sampler("k_heun", "Heun", "HeunDiscreteScheduler"),
    Sampler("k_dpm_2", "DPM2", "KDPM2DiscreteScheduler"),
    Sampler("k_dpm_2_a", "DPM2 a", "KDPM2AncestralDiscreteScheduler"),
    Sampler("k_dpmpp_2", "DPM++ 2M", "DPMSolverMultistepScheduler"),
    Sampler("k_dpmpp_2_a", "DPM++ 2S a", "DPMSolverSinglestepScheduler"),
    Sampler("DPM++ 2M Karras", "DPM++ 2M Karras", "DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    Sampler("DPM++ SDE Karras", "DPM++ SDE Karras", "DPMSolverSDEScheduler", {"use_karras_sigmas": True},
            needs="torchsde"),
    Sampler("UniPC", "UniPC", "UniPCMultistepScheduler"),
)

_BY_NAME: dict[str, Sampler] = {}
for _s in SAMPLERS:
    for _n in (_s.name, _s.a1111):
        if _n:
            _BY_NAME[_n.lower()] = _s


def find_sampler(name: str) -> Sampler | None:
    """The sampler called `name` (anchor or A1111 spelling, any case), or None."""
    return _BY_NAME.get(name.strip().lower())


def sampler_names() -> list[str]:
    """All accepted names, canonical ones first (for help and completion)."""
    names = [s.name for s in SAMPLERS]
    names += [s.a1111 for s in SAMPLERS if s.a1111 and s.a1111 not in names]
    return names


def nearest_sampler(name: str) -> str | None:
    """The accepted name closest to a misspelt one, if any is close."""
    lowered = {n.lower(): n for n in sampler_names()}
    hit = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.5)
    return lowered[hit[0]] if hit else None
