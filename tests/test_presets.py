"""Few-step presets: each row's timesteps and sigmas as diffusers makes them on the shipped SD 1.x and SDXL
scheduler configs, against the numbers the authors publish; a switch on the line wins; the resolved line
has no --preset and replays as it is; CFG <= 1 is one UNet call a step; --timesteps and --eta refusals."""

import inspect
import json
from pathlib import Path

import pytest

from dreamshell.line.formatter import format_request
from dreamshell.line.parser import ParseError, parse_request
from dreamshell.line.presets import (PRESETS, PresetError, apply_model_preset, apply_preset, describe, preset_names,
                                     preset_row, prediction_needed)
from dreamshell.line.samplers import SAMPLERS, TAKES_TIMESTEPS, cannot_run, plan

CONFIGS = Path(__file__).resolve().parent.parent / "dreamshell" / "configs"
FAMILIES = ("sd1", "sdxl")
TRAILING_8 = [999, 874, 749, 624, 499, 374, 249, 124]

# (preset, steps) -> the timesteps its authors publish (or that their published scheduler settings make):
# SDXL-Lightning / Hyper-SD: trailing spacing (the cards' timestep_spacing="trailing"; 4 steps = 999, 749, 499,
# 249, the same integers as Forge's Turbo schedule); LCM / TCD with original_inference_steps 50: 999, 759, 499, 259
# (diffusers docs api/schedulers/lcm.md, the LCM paper's skipping-step schedule); DMD2: its README's explicit lists.
PUBLISHED = {
    ("lcm", 2): [999, 499], ("lcm", 4): [999, 759, 499, 259], ("lcm", 8): [999, 879, 759, 639, 499, 379, 259, 139],
    ("turbo", 1): [999], ("turbo", 2): [999, 499], ("turbo", 4): [999, 749, 499, 249],
    ("lightning", 1): [999], ("lightning", 2): [999, 499], ("lightning", 4): [999, 749, 499, 249],
    ("lightning", 8): TRAILING_8,
    ("hyper", 1): [999], ("hyper", 2): [999, 499], ("hyper", 4): [999, 749, 499, 249], ("hyper", 8): TRAILING_8,
    ("tcd", 4): [999, 759, 499, 259], ("tcd", 8): [999, 879, 759, 639, 499, 379, 259, 139],
    ("dmd2", 4): [999, 749, 499, 249], ("dmd2", 1): [399],
}
# SD's scaled-linear betas: sigma(t) = sqrt((1 - a_t) / a_t) at the trailing timesteps
SIGMAS_4 = [14.6146, 4.0817, 1.6129, 0.6932, 0.0]


def _scheduler(family: str, request):
    """The scheduler the generator builds for a resolved request (`plan` -> from_config -> A1111's schedule
    installed -> set_timesteps)."""
    import diffusers

    from dreamshell.engines import schedules
    config = json.loads((CONFIGS / family / "scheduler" / "scheduler_config.json").read_text())
    p = plan(request.sampler, request.schedule, request.timesteps, request.eta)
    sched = getattr(diffusers, p.scheduler).from_config(config, **p.options)
    schedules.install(sched, p)
    if p.timesteps:
        sched.set_timesteps(timesteps=list(p.timesteps))
    else:
        sched.set_timesteps(request.steps)
    return sched, p


def test_every_row_has_a_source_and_each_family_one_default():
    assert preset_names() == ["lcm", "turbo", "lightning", "hyper", "tcd", "dmd2"]
    for name in preset_names():
        rows = [r for r in PRESETS if r.name == name]
        assert sum(r.default for r in rows) == 1
        assert len({r.steps for r in rows}) == len(rows)
        assert all(r.source for r in rows)
        assert all(not r.timesteps or len(r.timesteps) == r.steps for r in rows)
    assert {(r.name, r.steps) for r in PRESETS} == set(PUBLISHED)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("key", sorted(PUBLISHED))
def test_each_preset_runs_the_published_timesteps(family, key):
    name, steps = key
    request = apply_preset(parse_request(f"a cat --preset {name} -s {steps}"))
    assert request.preset is None and request.steps == steps
    sched, p = _scheduler(family, request)
    assert [int(t) for t in sched.timesteps] == PUBLISHED[key]
    row = preset_row(name, steps)
    assert p.eta == (row.eta if row.eta is not None else next(s.eta for s in SAMPLERS if s.name == row.sampler))


@pytest.mark.parametrize("family", FAMILIES)
def test_lightning_4_steps_runs_at_the_trained_sigmas(family):
    sched, _ = _scheduler(family, apply_preset(parse_request("a cat --preset lightning")))
    assert [round(float(s), 4) for s in sched.sigmas] == SIGMAS_4
    dmd2, _ = _scheduler(family, apply_preset(parse_request("a cat --preset dmd2")))
    assert [int(t) for t in dmd2.timesteps] == [int(t) for t in sched.timesteps]


def test_lcm_ignores_spacing_so_its_preset_names_none():
    import diffusers
    config = json.loads((CONFIGS / "sd1" / "scheduler" / "scheduler_config.json").read_text())
    plain = diffusers.LCMScheduler.from_config(config)
    trailing = diffusers.LCMScheduler.from_config(config, timestep_spacing="trailing")
    plain.set_timesteps(4)
    trailing.set_timesteps(4)
    assert plain.timesteps.tolist() == trailing.timesteps.tolist() == [999, 759, 499, 259]
    assert preset_row("lcm").schedule is None


def test_defaults_and_step_rows():
    assert {n: preset_row(n).steps for n in preset_names()} == {
        "lcm": 4, "turbo": 1, "lightning": 4, "hyper": 8, "tcd": 4, "dmd2": 4}
    assert preset_row("hyper", 1).sampler == "TCD" and preset_row("hyper", 1).eta == 1.0
    assert preset_row("hyper", 8).sampler == "ddim" and preset_row("hyper", 8).schedule == "turbo"
    assert preset_row("lightning", 1).prediction == "sample"
    assert preset_row("LIGHTNING", 3).steps == 4   # no 3-step row: the default row
    with pytest.raises(PresetError, match="unknown preset 'fast'; presets: lcm, turbo"):
        preset_row("fast")
    assert describe("dmd2")[0] == "dmd2 -s 4 (default): -A LCM --timesteps 999,749,499,249 -C 1"


@pytest.mark.parametrize("line, resolved", [
    ("a cat --preset lightning", '"a cat" -s 4 -C 1 -A k_euler --schedule turbo'),
    ("a cat --preset lightning -s 2", '"a cat" -s 2 -C 1 -A k_euler --schedule turbo'),
    ("a cat --preset lightning -s 3", '"a cat" -s 3 -C 1 -A k_euler --schedule turbo'),
    ("a cat --preset turbo -W 512", '"a cat" -s 1 -W 512 -C 1 -A k_euler_a --schedule turbo'),
    ("a cat --preset hyper -s 1", '"a cat" -s 1 -C 1 -A TCD --eta 1'),
    ("a cat --preset tcd -C 2 --eta 0.5", '"a cat" -s 4 -C 2 -A TCD --eta 0.5'),
    ("a cat --preset dmd2", '"a cat" -s 4 -C 1 -A LCM --timesteps 999,749,499,249'),
    ("a cat --preset dmd2 -s 2", '"a cat" -s 2 -C 1 -A LCM'),                 # no 2-step list published
    ("a cat --preset tcd -A k_euler", '"a cat" -s 4 -C 1 -A k_euler'),        # another sampler: no TCD eta
    ("a cat --preset lcm --timesteps 999,499", '"a cat" -s 2 -C 1 -A LCM --timesteps 999,499'),
    ("a cat --preset dmd2 --schedule karras", '"a cat" -s 4 -C 1 -A LCM --schedule karras'),
    ("a cat -S 7 --preset lcm -s 8 -A LCM", '"a cat" -s 8 -S 7 -C 1 -A LCM'),
])
def test_a_switch_on_the_line_wins_and_the_log_line_has_no_preset(line, resolved):
    request = parse_request(line)
    assert request.preset is not None and "--preset" in format_request(request)
    done = apply_preset(request)
    assert format_request(done) == resolved
    assert "--preset" not in resolved
    assert parse_request(resolved) == done                       # the log line replays as it ran
    assert apply_preset(parse_request(resolved)) == done         # and needs no preset


def test_a_launch_preset_under_the_line():
    """--preset at launch: the launch layer resolves its own preset; the line's switches then win over it."""
    launch = apply_preset(parse_request("x --preset lightning"))
    line = parse_request("a cat -s 8 -C 2")
    merged = line.with_(**{k: getattr(launch, k) for k in ("sampler", "schedule", "timesteps", "eta")
                           if getattr(line, k) in (None, ())})
    assert format_request(merged) == '"a cat" -s 8 -C 2 -A k_euler --schedule turbo'


def test_a_models_file_preset_under_the_model_defaults(tmp_path):
    from dreamshell.weights.models import ModelsFileError, load_registry
    weights = tmp_path / "w"
    weights.mkdir()
    models = tmp_path / "models.yaml"
    models.write_text(f"fast:\n  weights: {weights}\n  kind: sdxl\n  preset: Lightning\n"
                      f"two:\n  weights: {weights}\n  kind: sdxl\n  preset: lightning\n  steps: 2\n"
                      f"x0:\n  weights: {weights}\n  kind: sdxl\n  preset: lightning\n  steps: 1\n  prediction: sample\n")
    reg = load_registry(models)
    fast, two = reg.get("fast"), reg.get("two")
    assert (fast.preset, fast.steps, fast.sampler, fast.cfg_scale) == ("lightning", 4, "k_euler", 1.0)
    assert (two.steps, two.sampler) == (2, "k_euler")
    out = apply_model_preset(parse_request("a cat"), two.preset, two.steps, two.sampler, two.cfg_scale)
    assert format_request(out) == '"a cat" -s 2 -C 1 -A k_euler --schedule turbo'
    out = apply_model_preset(parse_request("a cat -C 3 -s 8"), fast.preset, fast.steps, fast.sampler, fast.cfg_scale)
    assert format_request(out) == '"a cat" -s 8 -C 3 -A k_euler --schedule turbo'
    x0 = reg.get("x0")
    assert prediction_needed("lightning", 1, x0.prediction) is None
    assert "needs a model that predicts 'sample'" in prediction_needed("lightning", 1, None)
    assert prediction_needed("lightning", 4, None) is None
    models.write_text(f"bad:\n  weights: {weights}\n  kind: sdxl\n  preset: quick\n")
    with pytest.raises(ModelsFileError, match="has preset 'quick'; presets: lcm, turbo, lightning"):
        load_registry(models)


@pytest.mark.parametrize("line, message", [
    ("a cat --timesteps 999,1000", "'1000' is out of range"),
    ("a cat --timesteps 999,999", "999 after 999 does not decrease"),
    ("a cat --timesteps 499,999", "999 after 499 does not decrease"),
    ("a cat --timesteps 999,x", "'x' is not a whole number"),
    ("a cat --timesteps 999,-1", "out of range"),
    ("a cat --timesteps " + ",".join(str(i % 1000) for i in range(1001)), "1001 timesteps is too many"),
    ("a cat -s 8 --timesteps 999,499", "-s 8 but --timesteps names 2"),
    ("a cat --schedule karras --timesteps 999,499", "give it without --schedule"),
    ("a cat --eta 1.5", "--eta goes from 0 to 1"),
    ("a cat --preset quick", "unknown preset 'quick'; presets: lcm, turbo, lightning, hyper, tcd, dmd2"),
])
def test_bad_values_are_one_line(line, message):
    with pytest.raises(ParseError, match=message.replace("(", r"\(").replace("+", r"\+")):
        parse_request(line)


def test_timesteps_set_steps_and_a_full_ladder_is_accepted():
    assert parse_request("a cat --timesteps 999,749,499,249").steps == 4
    full = parse_request("a cat -A k_euler --timesteps " + ",".join(str(t) for t in range(999, -1, -1)))
    assert full.steps == 1000 and full.timesteps[-1] == 0


def test_samplers_that_take_explicit_timesteps_and_eta_match_diffusers():
    import diffusers
    for s in SAMPLERS:
        if s.scheduler is None or s.needs:
            continue
        cls = getattr(diffusers, s.scheduler)
        assert ("timesteps" in inspect.signature(cls.set_timesteps).parameters) == (s.scheduler in TAKES_TIMESTEPS), s
        assert ("eta" in inspect.signature(cls.step).parameters) == (s.eta is not None), s
    assert "cannot run explicit --timesteps" in cannot_run("ddim", None, (999, 499))
    assert "takes no --eta" in cannot_run("k_euler", None, (), 0.3)
    assert cannot_run("TCD", None, (999, 499), 0.3) is None
    assert plan("TCD").eta == 0.3 and plan("ddim").eta == 0.0 and plan("k_euler").eta is None


def test_forge_turbo_schedule_is_trailing():
    """Forge's turbo_scheduler (float32 torch: round(k * 1000/n - 1), k = n..1) gives trailing spacing's
    integers at 1-15 steps; above, a tie rounded the other way moves a timestep by one (16, 32, 48 steps)."""
    import numpy as np
    import torch
    for n in range(1, 51):
        forge = torch.flip(torch.arange(1, n + 1) * float(1000.0 / n) - 1, (0,)).round().long().clip(0, 999)
        trailing = torch.tensor((np.round(np.arange(1000, 0, -1000 / n)) - 1).astype(int))
        if n <= 15:
            assert forge.tolist() == trailing.tolist(), n
        assert int((forge - trailing).abs().max()) <= 1, n
    assert plan("k_euler", "Turbo").options == {"timestep_spacing": "trailing"}


def _count_unet_calls(folder, guidance: float, steps: int, sampler: str = "LCM") -> int:
    import diffusers
    import torch
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
    p = plan(sampler)
    pipe.scheduler = getattr(diffusers, p.scheduler).from_config(pipe.scheduler.config, **p.options)
    calls = []
    pipe.unet.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    pipe("a red circle", num_inference_steps=steps, guidance_scale=guidance, height=32, width=32,
         generator=torch.Generator("cpu").manual_seed(1), output_type="latent")
    return sum(calls)


def test_cfg_at_most_1_is_one_unet_call_a_step(tmp_path):
    """CFG <= 1 runs no unconditional pass: one UNet evaluation of one latent per step (diffusers'
    do_classifier_free_guidance is guidance_scale > 1); CFG 7.5 evaluates two latents a step."""
    from tests.tiny_pipeline import make_tiny_pipeline
    folder = make_tiny_pipeline(tmp_path)
    for cfg in (0.0, 1.0):
        assert _count_unet_calls(folder, cfg, 4) == 4
    assert _count_unet_calls(folder, 7.5, 4) == 8


def test_preset_timesteps_and_eta_are_launch_options():
    """Every switch is a launch option (cli.py builds them from SWITCHES); --timesteps sets -s there too."""
    import dreamshell.cli as cli
    ap = cli.build_argparser()
    d = cli.session_defaults(ap.parse_args(["--preset", "Lightning", "--timesteps", "999,499", "--eta", "0.3"]), ap)
    assert (d.preset, d.timesteps, d.eta, d.steps) == ("lightning", (999, 499), 0.3, 2)
    with pytest.raises(SystemExit):
        cli.session_defaults(ap.parse_args(["-s", "3", "--timesteps", "999,499"]), ap)


@pytest.mark.parametrize("name, meta, line", [
    ("sdxl_lightning_2step_lora.safetensors", None,
     "sdxl_lightning_2step_lora.safetensors: its name says lightning (a few-step model): try --preset lightning -s 2"),
    ("Hyper-SD15-1step-lora.safetensors", None, "try --preset hyper -s 1"),
    ("Hyper-SD15-8steps-lora.safetensors", None, "try --preset hyper"),
    ("lcm-lora-sdv1-5.safetensors", None, "try --preset lcm"),
    ("pytorch_lora_weights.safetensors", {"ss_output_name": "TCD-SD15"}, "its metadata says TCD-SD15"),
    ("model.safetensors", {"modelspec.title": "SDXL Turbo"}, "try --preset turbo"),
    ("dmd2_sdxl_4step_lora_fp16.safetensors", None, "try --preset dmd2"),
    ("v1-5-pruned-emaonly.safetensors", {"ss_output_name": "detail"}, None),
])
def test_a_few_step_file_gets_a_suggestion_never_a_switch(name, meta, line):
    from dreamshell.line.presets import suggest_preset
    got = suggest_preset(name, meta)
    assert (got is None) if line is None else line in got
    assert got is None or "\n" not in got


def test_no_suggestion_for_a_line_that_already_runs_the_preset():
    from dreamshell.line.presets import suggest_preset
    name = "lcm-lora-sdv1-5.safetensors"
    assert suggest_preset(name, None, ("LCM", 1.0)) is None
    assert "try --preset lcm" in suggest_preset(name, None, ("LCM", 5.0))
    assert "try --preset lcm" in suggest_preset(name, None, ("k_euler", 1.0))
    assert "try --preset lcm" in suggest_preset(name, None, (None, None))
    assert "try --preset lightning -s 2" in suggest_preset("sdxl_lightning_2step_lora.safetensors", None, ("LCM", 1.0))


def test_safetensors_metadata_feeds_the_suggestion(tmp_path):
    from dreamshell.line.presets import suggest_preset
    from dreamshell.weights.checkpoint import safetensors_metadata
    raw = json.dumps({"__metadata__": {"ss_output_name": "Hyper-SD15-1step"},
                      "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    path = tmp_path / "mine.safetensors"
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + b"\0" * 4)
    assert safetensors_metadata(path) == {"ss_output_name": "Hyper-SD15-1step"}
    assert suggest_preset(path.name, safetensors_metadata(path)).endswith("try --preset hyper -s 1")
    assert safetensors_metadata(tmp_path / "x.ckpt") == {}
