"""Samplers and schedules: A1111's full list and its meaning of Automatic, the anchor's names with their
meaning, diffusers schedulers built for each, and refusals by name for what diffusers cannot run."""

import json
from pathlib import Path

import pytest

from dreamshell.line.parser import ParseError, parse_request
from dreamshell.line.samplers import SAMPLERS, SCHEDULES, cannot_run, effective_schedule, find_sampler, plan

# A1111 1.10 `modules/sd_samplers_kdiffusion.py`, `sd_samplers_timesteps.py`, `sd_samplers_lcm.py`:
# name -> the scheduler in its options (what "Automatic" runs), None for the model's own (Uniform)
A1111_SAMPLERS = {
    "DPM++ 2M": "karras", "DPM++ SDE": "karras", "DPM++ 2M SDE": "exponential", "DPM++ 2M SDE Heun": "exponential",
    "DPM++ 2S a": "karras", "DPM++ 3M SDE": "exponential", "Euler a": None, "Euler": None, "LMS": None,
    "Heun": None, "DPM2": "karras", "DPM2 a": "karras", "DPM fast": None, "DPM adaptive": None,
    "Restart": "karras", "DDIM": None, "DDIM CFG++": None, "PLMS": None, "UniPC": None, "LCM": None}
A1111_SCHEDULES = ["Automatic", "Uniform", "Karras", "Exponential", "Polyexponential", "SGM Uniform", "KL Optimal",
                   "Align Your Steps", "Simple", "Normal", "DDIM", "Beta"]
DEMO_CONFIG = Path(__file__).resolve().parent.parent / "models" / "demo" / "scheduler" / "scheduler_config.json"


def test_every_a1111_sampler_and_schedule_is_known_with_its_automatic_schedule():
    for name, auto in A1111_SAMPLERS.items():
        sampler = find_sampler(name)
        assert sampler is not None and sampler.a1111 == name
        assert effective_schedule(sampler, "automatic").name == (auto or "uniform")
    assert [s.a1111 for s in SCHEDULES][:len(A1111_SCHEDULES)] == A1111_SCHEDULES
    assert [s.a1111 for s in SCHEDULES][len(A1111_SCHEDULES):] == ["Turbo"]   # Forge's, after A1111's


@pytest.mark.parametrize("name, sampler, schedule", [
    ("DPM++ 2M Karras", "k_dpmpp_2", "karras"), ("DPM2 a Karras", "k_dpm_2_a", "karras"),
    ("DPM++ 2M SDE Exponential", "DPM++ 2M SDE", "exponential"), ("Euler a SGM Uniform", "k_euler_a", "sgm_uniform"),
    ("euler_ancestral", "k_euler_a", None), ("dpmpp_2m_sde_gpu", "DPM++ 2M SDE", None), ("uni_pc", "UniPC", None),
])
def test_combined_and_foreign_names(name, sampler, schedule):
    found = find_sampler(name)
    assert (find_sampler(found.a1111 or found.name).name, found.schedule) == (sampler, schedule)


def test_anchor_names_keep_their_meaning():
    assert find_sampler("k_dpmpp_2_a").ancestral and find_sampler("k_dpmpp_2_a").a1111 == "DPM++ 2S a"
    assert "k_dpmpp_2_a" in cannot_run("k_dpmpp_2_a") and "dpmpp_2s" in cannot_run("k_dpmpp_2_a")
    assert plan("dpmpp_2s").scheduler == "DPMSolverSinglestepScheduler" and not find_sampler("dpmpp_2s").ancestral
    assert plan("k_dpmpp_2") == plan("k_dpmpp_2", None)          # no schedule: the model's own, as before
    assert plan("k_dpmpp_2").options == {}


@pytest.mark.parametrize("sampler, schedule, why", [
    ("ddim", "exponential", "sampler 'ddim' cannot run with the 'Exponential' schedule: diffusers' DDIMScheduler "
                            "has no use_exponential_sigmas"),
    ("k_euler", "kl_optimal", "the 'KL Optimal' schedule has no diffusers equivalent"),
    ("UniPC", "polyexponential", "the 'Polyexponential' schedule has no diffusers equivalent for UniPC"),
    ("Restart", None, "sampler 'Restart' has no diffusers scheduler, so dreamshell cannot run it; try k_heun"),
    ("DPM fast", "karras", "sampler 'DPM fast' has no diffusers scheduler"),
])
def test_what_diffusers_cannot_run_is_refused_by_name(sampler, schedule, why):
    assert why in cannot_run(sampler, schedule)


def test_every_a1111_k_sampler_runs_every_schedule_a1111_makes_from_the_model():
    # A1111 runs any schedule type with any k-diffusion sampler (Euler a with Karras too): the sigmas are made
    # here (engines/schedules.py), so only the two it computes without the model's sigmas are refused
    for sampler in SAMPLERS:
        if sampler.scheduler is None or sampler.timesteps or sampler.a1111 is None:
            continue
        if sampler.scheduler in ("LCMScheduler", "TCDScheduler"):   # diffusers' own: spacing only, no sigmas
            assert "LCMScheduler has no use_karras_sigmas" in cannot_run("LCM", "karras")
            assert cannot_run(sampler.name, "sgm_uniform") is None and cannot_run(sampler.name, "ddim") is None
            continue
        for schedule in SCHEDULES[1:]:
            why = cannot_run(sampler.name, schedule.name)
            assert (why is None) == (schedule.name not in ("kl_optimal", "align_your_steps")), (sampler.name, why)


def _generator_with_demo_config():
    from dreamshell.engines.generator import DiffusersGenerator
    gen = DiffusersGenerator.__new__(DiffusersGenerator)
    gen._scheduler_config = json.loads(DEMO_CONFIG.read_text())
    return gen


def test_generator_builds_every_runnable_pair_with_the_schedule_applied():
    pytest.importorskip("diffusers")
    from dreamshell.engines.protocols import GenerationError
    gen = _generator_with_demo_config()
    built = refused = 0
    for sampler in SAMPLERS:
        for schedule in [None] + [s.name for s in SCHEDULES]:
            if sampler.needs:
                continue
            if cannot_run(sampler.name, schedule):
                with pytest.raises(GenerationError):
                    gen._scheduler(sampler.name, schedule)
                refused += 1
                continue
            scheduler = gen._scheduler(sampler.name, schedule)
            assert type(scheduler).__name__ == plan(sampler.name, schedule).scheduler
            for key, value in plan(sampler.name, schedule).options.items():
                assert scheduler.config[key] == value, (sampler.name, schedule, key)
            scheduler.set_timesteps(10)
            built += 1
    assert built > 100 and refused > 20


def test_karras_schedule_changes_the_sigmas():
    pytest.importorskip("diffusers")
    gen = _generator_with_demo_config()
    plain, karras = gen._scheduler("k_dpm_2"), gen._scheduler("k_dpm_2", "automatic")
    plain.set_timesteps(10)
    karras.set_timesteps(10)
    assert karras.config.use_karras_sigmas and not plain.config.get("use_karras_sigmas")
    assert abs(float(plain.sigmas[1]) - float(karras.sigmas[1])) > 1e-3


def test_schedule_switch_on_the_line():
    assert parse_request("a cat -A k_euler --schedule Karras").schedule == "karras"
    assert parse_request('a cat -A "Euler" --schedule "SGM Uniform"').schedule == "sgm_uniform"
    with pytest.raises(ParseError, match="unknown schedule 'fast'; schedules: automatic, uniform, karras"):
        parse_request("a cat --schedule fast")
    with pytest.raises(ParseError, match='already names its schedule'):
        parse_request('a cat -A "DPM++ 2M Karras" --schedule exponential')


def test_a_sampler_whose_package_is_missing_names_it():
    pytest.importorskip("diffusers")
    from dreamshell.engines.protocols import GenerationError
    try:
        import torchsde  # noqa: F401
        pytest.skip("torchsde is installed here")
    except ImportError:
        pass
    with pytest.raises(GenerationError, match="needs the 'torchsde' package: pip install torchsde"):
        _generator_with_demo_config()._scheduler("DPM++ SDE", "karras")
