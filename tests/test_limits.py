"""The bounds in limits.py: refused in one line with the bound named, and true to the schedulers."""

import json
import warnings
from pathlib import Path

import pytest

from dreamshell.line.errors import LimitError, ParseError
from dreamshell.line.limits import (MAX_ITERATIONS, MAX_LINE_CHARS, MAX_PROMPT_CHARS, MAX_STEPS, check_request,
                               max_steps)
from dreamshell.line.parser import parse_line, parse_request
from dreamshell.line.request import DreamRequest
from dreamshell.line.samplers import SAMPLERS


def _message(line: str) -> str:
    with pytest.raises(ParseError) as info:
        parse_line(line)
    text = str(info.value)
    assert "\n" not in text and len(text) <= 400
    return text


def test_iterations_are_bounded_with_the_bound_named():
    assert parse_request(f"x -n {MAX_ITERATIONS}").iterations == MAX_ITERATIONS
    assert f"the most is {MAX_ITERATIONS}" in _message(f"x -n {MAX_ITERATIONS + 1}")
    assert f"the most is {MAX_ITERATIONS}" in _message("x -n 4294967295")


def test_steps_are_bounded_per_sampler():
    assert parse_request("x -s 1000 -A ddim").steps == 1000
    assert "at most 1000" in _message("x -s 1001 -A ddim")
    assert "the k_dpmpp_2 sampler" in _message("x -s 1000 -A k_dpmpp_2")
    assert "any sampler" in _message("x -s 2000")
    # the sampler only known once the model's default fills it in: checked again on the resolved request
    check_request(DreamRequest("x", steps=1000, sampler="k_euler"))
    with pytest.raises(LimitError, match="UniPC"):
        check_request(DreamRequest("x", steps=1000, sampler="UniPC"))


def test_a_schedule_spelling_has_its_sampler_bound():
    assert "at most 999" in _message("x -s 1000 -A \"DPM++ 2M Karras\"")
    assert max_steps("dpmpp_2m") == max_steps("k_dpmpp_2") == 999 and max_steps("k_euler") == 1000


def test_every_sampler_has_a_step_bound():
    assert {s.name for s in SAMPLERS} == set(MAX_STEPS)


def _sd_scheduler(sampler):
    import diffusers
    config = json.loads((Path(__file__).resolve().parent.parent / "dreamshell" / "configs" / "sd1" / "scheduler"
                         / "scheduler_config.json").read_text())
    return getattr(diffusers, sampler.scheduler).from_config({**config, **sampler.options})


@pytest.mark.parametrize("sampler", [s for s in SAMPLERS if s.scheduler and not s.needs], ids=lambda s: s.name)
def test_the_step_bound_is_what_the_scheduler_can_take(sampler):
    """At the bound the scheduler makes distinct timesteps; DDIM refuses one more, PLMS repeats one."""
    scheduler = _sd_scheduler(sampler)
    bound = MAX_STEPS[sampler.name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scheduler.set_timesteps(bound)
    distinct = len(set(scheduler.timesteps.tolist()))
    if "Karras" not in sampler.name:  # Karras spacing maps several sigmas to one timestep at any count
        assert distinct >= bound, "every step at a timestep of its own"
    over = _sd_scheduler(sampler)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            over.set_timesteps(bound + 1)
        except ValueError:
            return  # DDIM: "cannot be larger than num_train_timesteps"
    if sampler.name in ("plms", "k_dpmpp_2", "dpmpp_2s", "deis", "UniPC"):
        assert len(set(over.timesteps.tolist())) < bound + 1, "one step more repeats a timestep"


def test_prompt_and_line_lengths_are_bounded():
    assert parse_request("p" * MAX_PROMPT_CHARS).prompt == "p" * MAX_PROMPT_CHARS
    text = _message("p" * (MAX_PROMPT_CHARS + 1))
    assert f"the most is {MAX_PROMPT_CHARS}" in text and str(MAX_PROMPT_CHARS + 1) in text
    text = _message("x -o " + "d" * MAX_LINE_CHARS)
    assert f"at most {MAX_LINE_CHARS}" in text


def test_limit_errors_are_parse_errors():
    assert issubclass(LimitError, ParseError)
