"""Few-step recipes as their authors publish them: one table, one row per (preset, steps), each citing its
source (stdlib only). REFERENCE.md section 11.

What a user types: `--preset NAME` (on a line, at launch, `preset:` in the models file) and, to pick
another published step count, the usual `-s N`: `--preset lightning -s 2`. One name per family because
the step count already has its switch, the model cards are written that way ("2-Step, 4-Step, 8-Step"),
and completion stays six names long. `-s N` with no published row for N keeps the family's default row
at N steps (a switch on the line wins).

`apply_preset(request, name)` fills what the line left open (None / the request's default) from the row,
and returns the request with `preset` cleared: the log line records the resolved switches, never
`--preset`, so a replay needs no preset and gives the same bytes. The sampler-specific parts of a row
(schedule, timesteps, eta) apply only when the sampler that runs is the row's.

Schedule: the rows that the cards give as diffusers' `timestep_spacing="trailing"` run `turbo` (Forge's Turbo
schedule: exactly the trailing timesteps, 999, 749, 499, 249 at 4 steps), not A1111's `SGM Uniform`, whose
sigmas fall between those timesteps (998.99, 749.25, ... at 4 steps: engines/schedules.py makes A1111's own).

CFG: the cards write `guidance_scale=0`; diffusers runs guidance only above 1 (`do_classifier_free_guidance
= guidance_scale > 1`), so 0 and 1 make the same bytes and one UNet call per step. The rows say 1: A1111
and ComfyUI read CFG 0 as the unconditional prediction alone and CFG 1 as the conditional one (ComfyUI
then skips the unconditional pass), so `-C 1` is the value that means "no guidance" in every tool.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from .errors import UserError
from .request import REQUEST_DEFAULTS, DreamRequest
from .samplers import find_sampler


class PresetError(UserError):
    """An unknown preset name; str() is the one line for the user."""


@dataclass(frozen=True)
class Preset:
    name: str                         # what the user types
    steps: int
    sampler: str                      # a dreamshell sampler name (line/samplers.py)
    cfg_scale: float
    schedule: str | None = None       # a dreamshell schedule name; None: the sampler's own (the model's config)
    timesteps: tuple[int, ...] = ()   # explicit timesteps (then no schedule)
    eta: float | None = None          # TCD's gamma; None: the sampler's default
    prediction: str | None = None     # the model this row needs predicts this ("sample" = x0); checked, not set
    default: bool = False             # the family's row when -s is not given
    source: str = ""                  # model card / paper / docs the row is read from
    note: str = ""


_LIGHTNING = ("https://huggingface.co/ByteDance/SDXL-Lightning (README, 'Diffusers Usage': "
              "EulerDiscreteScheduler.from_config(..., timestep_spacing=\"trailing\"), guidance_scale=0; "
              "'1-Step UNet': prediction_type=\"sample\")")
_HYPER = ("https://huggingface.co/ByteDance/Hyper-SD (README: N-steps LoRA with DDIMScheduler timestep_spacing="
          "\"trailing\", guidance_scale=0; 1-step unified LoRA with TCDScheduler, eta=1.0)")
_TCD = ("https://huggingface.co/h1t/TCD-SDXL-LoRA and huggingface/diffusers "
        "docs/source/en/using-diffusers/inference_with_tcd_lora.md (TCDScheduler, 4 steps, guidance_scale=0, eta=0.3)")
_LCM = ("https://huggingface.co/latent-consistency/lcm-lora-sdv1-5 (LCMScheduler, 2-8 steps, guidance 0 or 1-2; "
        "original_inference_steps 50, diffusers' default) and huggingface/diffusers "
        "docs/source/en/using-diffusers/inference_with_lcm.md")
_TURBO = ("https://huggingface.co/stabilityai/sdxl-turbo and stabilityai/sd-turbo (1 step, guidance_scale=0.0; "
          "scheduler_config timestep_spacing \"trailing\": EulerAncestralDiscreteScheduler for sdxl-turbo, "
          "EulerDiscreteScheduler for sd-turbo, the same at 1 step) and huggingface/diffusers "
          "docs/source/en/using-diffusers/sdxl_turbo.md")
_DMD2 = ("tianweiy/DMD2:README.md and https://huggingface.co/tianweiy/DMD2 (LCMScheduler, guidance_scale=0, "
         "4 steps at timesteps=[999, 749, 499, 249] 'the one we used for training'; 1 step at timesteps=[399])")

PRESETS: tuple[Preset, ...] = (
    Preset("lcm", 4, "LCM", 1.0, default=True, source=_LCM,
           note="for LCM-LoRA; a full LCM UNet (LCM_Dreamshaper_v7, lcm-sdxl) takes CFG 8 as an embedding"),
    Preset("lcm", 2, "LCM", 1.0, source=_LCM),
    Preset("lcm", 8, "LCM", 1.0, source=_LCM),
    Preset("turbo", 1, "k_euler_a", 1.0, "turbo", default=True, source=_TURBO),
    Preset("turbo", 2, "k_euler_a", 1.0, "turbo", source=_TURBO),
    Preset("turbo", 4, "k_euler_a", 1.0, "turbo", source=_TURBO),
    Preset("lightning", 4, "k_euler", 1.0, "turbo", default=True, source=_LIGHTNING),
    Preset("lightning", 2, "k_euler", 1.0, "turbo", source=_LIGHTNING),
    Preset("lightning", 8, "k_euler", 1.0, "turbo", source=_LIGHTNING),
    Preset("lightning", 1, "k_euler", 1.0, "turbo", prediction="sample", source=_LIGHTNING,
           note="the 1-step model (sdxl_lightning_1step_unet_x0) predicts x0: give it `prediction: sample` "
                "in the models file"),
    Preset("hyper", 8, "ddim", 1.0, "turbo", default=True, source=_HYPER,
           note="for the Hyper-SD N-steps LoRA of that N; the 8-steps CFG LoRA takes CFG 5-8 instead"),
    Preset("hyper", 2, "ddim", 1.0, "turbo", source=_HYPER),
    Preset("hyper", 4, "ddim", 1.0, "turbo", source=_HYPER),
    Preset("hyper", 1, "TCD", 1.0, eta=1.0, source=_HYPER,
           note="for the 1-step unified LoRA; the SDXL 1-step UNet is `-A LCM --timesteps 800`"),
    Preset("tcd", 4, "TCD", 1.0, eta=0.3, default=True, source=_TCD),
    Preset("tcd", 8, "TCD", 1.0, eta=0.3, source=_TCD),
    Preset("dmd2", 4, "LCM", 1.0, timesteps=(999, 749, 499, 249), default=True, source=_DMD2),
    Preset("dmd2", 1, "LCM", 1.0, timesteps=(399,), source=_DMD2, note="for the 1-step DMD2 UNet"),
)

_FAMILIES: dict[str, list[Preset]] = {}
for _p in PRESETS:
    _FAMILIES.setdefault(_p.name, []).append(_p)


def preset_names() -> list[str]:
    """The names a user types, in table order."""
    return list(_FAMILIES)


def find_preset(name: str) -> str | None:
    """The canonical name of a preset (any case), or None."""
    key = name.strip().lower()
    return key if key in _FAMILIES else None


def preset_row(name: str, steps: int | None = None) -> Preset:
    """The row of `name` for `steps` (its published step count), else the family's default row."""
    key = find_preset(name)
    if key is None:
        raise PresetError(f"unknown preset '{name}'; presets: {', '.join(preset_names())}")
    rows = _FAMILIES[key]
    for row in rows:
        if steps is not None and row.steps == steps:
            return row
    return next(r for r in rows if r.default)


def apply_preset(request: DreamRequest, preset: str | None = None) -> DreamRequest:
    """`request` with what it leaves open taken from `preset` (default: `request.preset`), and no preset left.

    A field the request sets (a switch typed on the line) wins. `-s N` picks the row published for N steps;
    with no such row the default row runs at N steps, without its explicit timesteps. The row's schedule,
    timesteps and eta apply only when the sampler that runs is the row's."""
    name = preset or request.preset
    if not name:
        return request
    steps_typed = request.steps is not None or bool(request.timesteps)
    steps = len(request.timesteps) if request.timesteps else request.steps
    row = preset_row(name, steps)
    changes: dict = {"preset": None}

    def fill(field: str, value) -> None:
        if getattr(request, field) == REQUEST_DEFAULTS[field] and value != REQUEST_DEFAULTS[field]:
            changes[field] = value

    fill("sampler", row.sampler)
    fill("cfg_scale", row.cfg_scale)
    if not steps_typed:
        changes["steps"] = row.steps
    running = find_sampler(request.sampler) if request.sampler else None
    if running is None or running.name == find_sampler(row.sampler).name:
        on_row = not steps_typed or steps == row.steps
        if not request.timesteps and not request.schedule:   # a typed schedule or timesteps stands alone
            if row.timesteps and on_row:
                fill("timesteps", row.timesteps)
            else:
                fill("schedule", row.schedule)
        fill("eta", row.eta)
    return replace(request, **changes)


def apply_model_preset(request: DreamRequest, preset: str | None, steps: int, sampler: str,
                       cfg_scale: float) -> DreamRequest:
    """A models-file `preset:` under the model's own defaults (`steps`, `sampler`, `cfg_scale` of its spec,
    which the models file fills from the preset's row when the entry leaves them out): what the line and
    the launch options left open takes the model's defaults, then the row's schedule, timesteps and eta."""
    if not preset:
        return request
    base = request.with_(steps=request.steps if request.steps is not None or request.timesteps else steps,
                         sampler=request.sampler or sampler,
                         cfg_scale=request.cfg_scale if request.cfg_scale is not None else cfg_scale)
    return apply_preset(base, preset)


def prediction_needed(request_preset: str, steps: int | None, model_prediction: str | None) -> str | None:
    """One line when the preset's row needs a model that predicts something else than `model_prediction`
    (None = epsilon, the SD default), else None. The planner calls it before the line runs."""
    row = preset_row(request_preset, steps)
    if row.prediction and row.prediction != (model_prediction or "epsilon"):
        return (f"--preset {row.name} at {row.steps} step{'s' * (row.steps > 1)} needs a model that predicts "
                f"'{row.prediction}' and this one predicts '{model_prediction or 'epsilon'}': {row.note}")
    return None


def describe(name: str) -> list[str]:
    """One line per row of a preset, for `!help --preset` and the README table."""
    lines = []
    for row in _FAMILIES.get(find_preset(name) or "", []):
        how = f"-A {row.sampler}"
        if row.schedule:
            how += f" --schedule {row.schedule}"
        if row.timesteps:
            how += " --timesteps " + ",".join(map(str, row.timesteps))
        if row.eta is not None:
            how += f" --eta {row.eta:g}"
        mark = " (default)" if row.default else ""
        lines.append(f"{row.name} -s {row.steps}{mark}: {how} -C {row.cfg_scale:g}" + (f"; {row.note}" if row.note else ""))
    return lines


# ----- hints: a file that looks like a few-step model or LoRA gets a one-line suggestion, never a switch

_HINTS = (("dmd2", "dmd2"), ("lightning", "lightning"), ("hyper-sd", "hyper"), ("hypersd", "hyper"),
          ("hyper_sd", "hyper"), ("tcd", "tcd"), ("turbo", "turbo"), ("lcm", "lcm"))
_STEPS_IN_NAME = re.compile(r"(\d+)[-_ ]?steps?(?![a-z])")


def suggest_preset(name: str, metadata: dict | None = None, running: tuple[str, float] | None = None) -> str | None:
    """One line suggesting a preset for a weights file whose name, ModelSpec title (`modelspec.title`) or
    kohya metadata (`ss_output_name`, `ss_sd_model_name`) names a few-step model, e.g.
    'sdxl_lightning_2step_lora.safetensors looks like SDXL-Lightning: try --preset lightning -s 2'; else None.
    `running`: the line's (sampler, CFG); None too when the line already runs that preset's sampler and CFG
    (typed with --preset, or a log line that recorded its values)."""
    meta = metadata or {}
    texts = [name] + [str(meta.get(k, "")) for k in ("modelspec.title", "ss_output_name", "ss_sd_model_name")]
    for text in texts:
        low = text.lower()
        for word, preset in _HINTS:
            if word in low:
                found = _STEPS_IN_NAME.search(low)
                steps = int(found.group(1)) if found else None
                row = preset_row(preset, steps)
                sampler, cfg = running or (None, None)
                if sampler and cfg is not None and sampler.lower() == row.sampler.lower() \
                        and abs(cfg - row.cfg_scale) < 1e-6:
                    return None
                how = f"--preset {preset}" + (f" -s {steps}" if steps and row.steps == steps and not row.default else "")
                where = "its name" if text == name else "its metadata"
                return f"{name}: {where} says {text if text != name else word} (a few-step model): try {how}"
    return None
