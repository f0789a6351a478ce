"""Presets go through the one plan (issue 17): the order a preset is filled in, the models file's
`preset:`, a preset's model refusal before anything runs, and a log line that needs no preset."""

import pytest

from dreamshell.line.errors import UserError
from dreamshell.line.formatter import format_request
from dreamshell.line.parser import parse_request
from dreamshell.run.plan import PlanState, Planner
from dreamshell.weights.models import ModelSpec, Registry, demo_spec, load_registry


def plan(line: str, defaults=None, spec=None):
    spec = spec or demo_spec()
    planner = Planner(Registry({spec.name: spec}), defaults)
    return planner.plan(parse_request(line), PlanState(spec))


def test_a_preset_line_is_logged_as_the_values_it_ran_with():
    line = plan("a red circle -S 1 --preset lightning -s 4").line
    text = format_request(line)
    assert "--preset" not in text and " -A k_euler " in text and "-C 1 " in text
    assert "--schedule turbo" in text          # trailing spacing: 999, 749, 499, 249 (tests/test_presets.py)
    assert plan(text).line == line              # the log line plans the same request without the preset


def test_a_switch_on_the_line_wins_over_the_preset():
    line = plan("a red circle -S 1 --preset lcm -C 2 -s 6").line
    assert (line.cfg_scale, line.steps, line.sampler) == (2.0, 6, "LCM")


def test_line_preset_then_launch_switches_then_launch_preset():
    launch = parse_request("x -C 1.5 --preset tcd")
    assert plan("a cat -S 1", launch).line.cfg_scale == 1.5            # a launch switch wins over its preset
    assert plan("a cat -S 1", launch).line.sampler == "TCD"           # the launch preset fills the rest
    line = plan("a cat -S 1 --preset lcm", launch).line
    assert line.sampler == "LCM" and line.eta is None                 # the line's preset: none of TCD's eta
    assert line.cfg_scale == 1.0                                      # ... and it wins over the launch's -C


def test_a_models_file_preset_fills_what_the_line_and_launch_leave_open(tmp_path):
    models = tmp_path / "models.yaml"
    models.write_text("fast:\n  weights: builtin:demo\n  preset: lcm\n")
    registry = load_registry(models)
    spec = registry.get("fast")
    assert (spec.steps, spec.sampler, spec.cfg_scale) == (4, "LCM", 1.0)
    line = Planner(registry).plan(parse_request("a cat -S 1 -s 6"), PlanState(spec)).line
    assert (line.steps, line.sampler, line.cfg_scale) == (6, "LCM", 1.0)


def test_a_preset_for_another_kind_of_model_is_refused_before_it_runs():
    with pytest.raises(UserError, match="lightning at 1 step needs a model that predicts 'sample'"):
        plan("a cat -S 1 --preset lightning -s 1")
    x0 = ModelSpec("x0", demo_spec().weights, "sd1", prediction="sample", width=64, height=64)
    assert plan("a cat -S 1 --preset lightning -s 1", spec=x0).line.steps == 1


def test_a_pass_from_an_image_that_runs_no_step_is_one_line(tmp_path):
    """`-f 0.3` at a few-step preset's 2 steps runs int(2 x 0.3) = 0 steps: diffusers' img2img pipeline failed
    with a traceback; now the plan answers in one line that names both ways out."""
    from PIL import Image
    init = tmp_path / "init.png"
    Image.new("RGB", (64, 64), "red").save(init)
    with pytest.raises(UserError) as e:
        plan(f"a red circle -S 1 -I {init} -f 0.3 --preset lcm -s 2")
    assert str(e.value) == ("-f 0.3 with -s 2 runs no step (a pass from an image runs int(steps x strength) = 0 "
                            "of its 2): use -f 0.5 or more, or -s 4 or more")
    assert plan(f"a red circle -S 1 -I {init} -f 0.5 --preset lcm -s 2").line.steps == 2
    assert plan(f"a red circle -S 1 -I {init} -f 0.3 --preset lcm").line.steps == 4   # 4 x 0.3: one step
    # the hires fix's second pass counts its steps A1111's way (tests/test_sampling_parity.py): not refused
    assert plan("a red circle -S 1 --hires_fix --hires_steps 1").line.hires_steps == 1
    # the parser takes any -f with any -s: a log line is read whole before it is planned
    assert parse_request(f"a -I {init} -f 0.3 -s 2").steps == 2
